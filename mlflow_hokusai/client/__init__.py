"""Client side: the request-auth plugin, the app client and the SDK."""
