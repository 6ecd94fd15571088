"""The Hokusai token tags: their rules (pure, shared with the SDK) and the server-side guard."""
