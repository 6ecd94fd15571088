"""The one clock of our tables: naive UTC to the second (SQLite keeps no time zone, so none
is ever stored, and every writer and reader agrees on what "now" looks like)."""

from __future__ import annotations

from datetime import datetime, timezone


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
