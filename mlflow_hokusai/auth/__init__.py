"""Authentication: parsing credentials from a request and resolving them to an identity."""
