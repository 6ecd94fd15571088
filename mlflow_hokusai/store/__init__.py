"""Persistence: our tables (keys, settings, audit events, token claims), engines, migrations.
Never imports Flask, nor anything of ours above it (only ``errors``)."""
