"""The server's key lifetime rules (settings ``max_key_lifetime_days``,
``default_key_lifetime_days``, ``expire_unused_after_days``; all off unless set):

- a key is created with the default lifetime when its creator gives none;
- no key is created with a longer lifetime than the maximum, or with none while a maximum is
  set, by anyone (admins and the offline CLI included): 400 naming the maximum;
- a rotated key keeps its lifetime, cut to the maximum;
- a key not used for ``expire_unused_after_days`` (counted from its last use, or from its
  creation if it was never used) is *dormant*: refused, and listed as such;
- a rotation may leave the old key working for an overlap window (``grace_seconds``; the
  server default ``rotation_grace``, 0 = none; at most ``max_rotation_grace``).

An active key within ``EXPIRY_WARNING`` of its expiry is *expiring*: its description says so
(``expiring``) and the key page warns ("expires in 3 h").

Tightening a rule: the maximum and the default apply to keys created (or rotated) from then on;
existing keys keep their expiry. Dormancy applies to every key at once, old ones included.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from mlflow_hokusai.config import DEFAULT_MAX_ROTATION_GRACE, check_lifetime_rules
from mlflow_hokusai.errors import invalid_parameter
from mlflow_hokusai.store.clock import utcnow
from mlflow_hokusai.store.keys import KeyRecord, KeyStatus

# How long before its expiry a key is *expiring* (warned about).
EXPIRY_WARNING = timedelta(days=7)


@dataclass(frozen=True)
class LifetimeRules:
    max_lifetime_days: int | None = None
    default_lifetime_days: int | None = None
    unused_after_days: int | None = None
    rotation_grace_seconds: int = 0
    max_rotation_grace_seconds: int = DEFAULT_MAX_ROTATION_GRACE

    def __post_init__(self):
        check_lifetime_rules(
            self.max_lifetime_days, self.default_lifetime_days, self.unused_after_days
        )

    def expiry_days(self, requested: int | None) -> int | None:
        """The lifetime a new key gets when its creator asked for ``requested`` days (None:
        no expiry asked for). Raises a 400 ``HokusaiError`` above the maximum."""
        days = self.default_lifetime_days if requested is None else requested
        cap = self.max_lifetime_days
        if cap is not None and (days is None or days > cap):
            asked = "no expiry" if days is None else f"{days} days"
            raise invalid_parameter(
                f"'expires_in_days' must be at most {cap}: this server's "
                f"max_key_lifetime_days is {cap} days (for every key, admins' included), "
                f"and this request asked for {asked}.",
            )
        return days

    def grace(self, requested) -> timedelta | None:
        """The overlap window of a rotation that asked for ``requested`` seconds (None: the
        server default). Raises a 400 ``HokusaiError`` for anything else than a whole number
        of seconds from 0 to the maximum."""
        if requested is None:
            seconds = self.rotation_grace_seconds
        elif isinstance(requested, bool) or not isinstance(requested, int):
            raise invalid_parameter(
                f"'grace_seconds' must be a whole number of seconds, not {requested!r}."
            )
        else:
            seconds = requested
        if not 0 <= seconds <= self.max_rotation_grace_seconds:
            raise invalid_parameter(
                f"'grace_seconds' must be between 0 and {self.max_rotation_grace_seconds} "
                f"(this server's max_rotation_grace), not {seconds}."
            )
        return timedelta(seconds=seconds) if seconds else None

    def rotated_lifetime(self, old: KeyRecord) -> timedelta | None:
        """The lifetime of ``old``'s replacement: the same span, cut to the maximum."""
        span = old.expires_at - old.created_at if old.expires_at else None
        if self.max_lifetime_days is not None:
            cap = timedelta(days=self.max_lifetime_days)
            if span is None or span > cap:
                span = cap
        return span

    def dormant_cutoff(self, now: datetime | None = None) -> datetime | None:
        """Keys last used (or made) at or before this are dormant; None: no such rule."""
        if self.unused_after_days is None:
            return None
        return (now or utcnow()) - timedelta(days=self.unused_after_days)

    def dormant_since(self, record: KeyRecord, now: datetime | None = None) -> datetime | None:
        """When ``record`` was last used (or made), if that is too long ago; else None."""
        if self.unused_after_days is None:
            return None
        since = record.last_used_at or record.created_at
        now = now or utcnow()
        if now - since >= timedelta(days=self.unused_after_days):
            return since
        return None

    def status(self, record: KeyRecord, now: datetime | None = None) -> KeyStatus | str:
        """The record's status with the rules applied ("dormant" when unused too long)."""
        status = record.status(now)
        if status == "active" and self.dormant_since(record, now) is not None:
            return "dormant"
        return status

    def expiring(self, record: KeyRecord, now: datetime | None = None) -> bool:
        """The key works (active, not dormant) and expires within ``EXPIRY_WARNING``."""
        now = now or utcnow()
        return (
            record.expires_at is not None
            and record.expires_at - now <= EXPIRY_WARNING
            and self.status(record, now) == "active"
        )

    def describe(self, record: KeyRecord) -> dict:
        """``record.to_dict()`` with the status these rules give it, and whether it is
        expiring."""
        now = utcnow()
        return {
            **record.to_dict(),
            "status": self.status(record, now),
            "expiring": self.expiring(record, now),
        }


def lifetime_rules(settings) -> LifetimeRules:
    """The rules a ``config.Settings`` sets."""
    return LifetimeRules(
        max_lifetime_days=settings.max_key_lifetime_days,
        default_lifetime_days=settings.default_key_lifetime_days,
        unused_after_days=settings.expire_unused_after_days,
        rotation_grace_seconds=settings.rotation_grace,
        max_rotation_grace_seconds=settings.max_rotation_grace,
    )
