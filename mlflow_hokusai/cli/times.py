"""Parsing the CLI's time options (``audit list --since``)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from mlflow_hokusai.config import parse_duration
from mlflow_hokusai.store.clock import utcnow

# A duration with its unit: ``--since 90`` is neither a date nor (without a unit) a duration.
_HAS_UNIT = re.compile(r"\d+\s*[smhdw]")


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``--since``: an ISO date or date-time (naive = UTC) or a duration ago (``1h``, ``7d``);
    returns naive UTC, as stored."""
    text = text.strip()
    if _HAS_UNIT.fullmatch(text.lower()):
        return (now or utcnow()) - timedelta(seconds=parse_duration(text))
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
