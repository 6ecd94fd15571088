"""API keys as a domain: their format (pure), the management rules shared by REST and the
CLI (``management``), and the audit log (``audit``). Built on ``store``; knows nothing of HTTP."""
