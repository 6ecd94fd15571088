"""Persistence for keys and settings. Never imports Flask."""
