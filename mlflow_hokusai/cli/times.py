"""Parsing the CLI's time options (``audit list --since``)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from mlflow_hokusai.store.clock import utcnow

_DURATION = re.compile(r"(\d+)\s*([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``--since``: an ISO date or date-time (naive = UTC) or a duration ago (``1h``, ``7d``);
    returns naive UTC, as stored."""
    text = text.strip()
    match = _DURATION.fullmatch(text.lower())
    if match:
        now = now or utcnow()
        return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an ISO date/time (2026-01-31, 2026-01-31T12:00:00Z) nor a "
            "duration such as 30m, 1h, 7d or 2w"
        ) from None
    if when.tzinfo is not None:
        when = when.astimezone(timezone.utc).replace(tzinfo=None)
    return when
