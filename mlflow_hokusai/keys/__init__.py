"""API keys: their format (pure), their store, and the service that authenticates them."""
