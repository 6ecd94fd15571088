"""Notices about keys that need their owner's attention, found by the webhook sender every
``key_webhook_check_interval``: a key that expires within 7 days, then within 1 day (a key
first seen inside 1 day gets only the 1-day notice), and a key that turned dormant under the
lifetime rules (``keys/lifetime.py``, ``expire_unused_after_days``).

Each notice is sent once per key, whichever worker or replica finds it first: its row in
``hokusai_key_notices``, its audit event (``expiring`` / ``dormant``, by actor ``server``)
and its webhook event are one transaction, and the row's primary key refuses a second.
Revoked, expired, rotated and token-exchange keys get no notices.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from mlflow_hokusai.keys.lifetime import EXPIRY_WARNING, LifetimeRules
from mlflow_hokusai.keys.webhooks import SERVER_ACTOR, key_event
from mlflow_hokusai.store.audit import audit_values
from mlflow_hokusai.store.clock import utcnow
from mlflow_hokusai.store.keys import KeyRecord
from mlflow_hokusai.store.webhooks import WebhookStore

DAY = timedelta(days=1)
# (notice, window's start, window's end, days): the 1-day window first; the 7-day notice is
# sent when the key page starts showing the key as expiring.
_WARN = EXPIRY_WARNING.days
EXPIRING = (("expiring-1d", 0, 1, 1), (f"expiring-{_WARN}d", 1, _WARN, _WARN))
DORMANT = "dormant"


class KeyNotices:
    def __init__(self, store: WebhookStore, rules: LifetimeRules):
        self.store = store
        self.rules = rules

    def check(self, now: datetime | None = None) -> int:
        """Send every notice due at ``now``; return how many this call made."""
        now = now or utcnow()
        made = 0
        for notice, start, end, days in EXPIRING:
            for record in self.store.expiring(now, now + start * DAY, now + end * DAY, notice):
                detail = f"expires {record.expires_at.isoformat()}Z (within {days} day"
                detail += f"{'s' if days > 1 else ''}) name={record.name!r}"
                made += self._notice(record, notice, "expiring", now, detail, within_days=days)
        cutoff = self.rules.dormant_cutoff(now)
        if cutoff is not None:
            for record in self.store.unused(now, cutoff, DORMANT):
                since = record.last_used_at or record.created_at
                days = self.rules.unused_after_days
                detail = (
                    f"unused since {since.isoformat()}Z (expire_unused_after_days={days}) "
                    f"name={record.name!r}"
                )
                made += self._notice(
                    record, DORMANT, "dormant", now, detail, unused_since=since, unused_days=days
                )
        return made

    def _notice(
        self, record: KeyRecord, notice: str, event: str, now: datetime, detail: str, **details
    ) -> bool:
        row = key_event(event, record, actor=SERVER_ACTOR, now=now, **details)
        audit = audit_values(
            event,
            actor=SERVER_ACTOR,
            occurred_at=now,
            key_id=record.id,
            username=record.username,
            detail=detail,
        )
        return self.store.add_notice(record.id, notice, audit, row)
