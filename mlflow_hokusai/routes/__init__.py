"""HTTP layer: the outer gate (prefix + authentication) and our REST endpoints."""
