"""The audit repository: rows in ``hokusai_audit_events``.

An event names what happened to which key (by id, never the key), who did it and from where.
Writers are the key-management service (created / rotated / revoked), the gate
(expired-use / denied-use) and the webhook sender's notices (expiring / dormant); a key event
for the webhooks is queued in the same transaction as its audit event. Readers are
``mlflow-hokusai audit list`` and the REST ``audit/list`` endpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mlflow_hokusai.store.models import AuditEvent
from mlflow_hokusai.store.webhooks import OutboxRow, outbox_insert

# Every kind of event, with what it means (``audit list --help`` shows this table).
EVENTS = {
    "created": "a key was created",
    "rotated": "a key was replaced by a new one",
    "revoked": "a key was revoked",
    "limited": "a key's resource limits were changed",
    "expired-use": "an expired or dormant key was refused",
    "denied-use": "a key was refused (revoked, read-only, outside its limits or addresses)",
    "login-limited": "password sign-ins were refused after too many failures",
    "rate-limited": "a key went over its rate limit",
    "policy-created": "a keyless CI trust policy was created",
    "policy-deleted": "a keyless CI trust policy was deleted",
    "exchanged": "a workload token was exchanged for a short-lived key",
    "exchange-refused": "a workload token was refused",
    "signed-in": "a person signed in with the identity provider (a session began)",
    "signed-out": "a person signed out (their session ended)",
    "session-revoked": "a session was revoked (by its owner or an admin)",
    "sign-in-refused": "a sign-in was refused, with the reason",
    "roles-changed": "sign-in changed a person's admin status or MLflow roles (their groups)",
    "expiring": "a key's owner was told it expires within 7 days or 1 day (key webhooks)",
    "dormant": "a key's owner was told it turned dormant, unused too long (key webhooks)",
}
_LIMITS = {"actor": 255, "username": 255, "source": 255, "detail": 512}


@dataclass(frozen=True)
class AuditRecord:
    id: int
    occurred_at: datetime
    event: str
    actor: str
    key_id: str | None
    username: str | None
    source: str | None
    detail: str

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "time": self.occurred_at.replace(tzinfo=timezone.utc).isoformat(),
            "event": self.event,
            "actor": self.actor,
            "key_id": self.key_id,
            "username": self.username,
            "source": self.source,
            "detail": self.detail,
        }

    def to_api(self) -> dict:
        """The REST shape: the client's address is ``address``."""
        fields = self.to_dict()
        fields["address"] = fields.pop("source")
        return fields


def _clip(values: dict) -> dict:
    # Columns are bounded; a long header value must never make an audit write fail.
    return {
        k: (v[: _LIMITS[k]] if isinstance(v, str) and k in _LIMITS else v)
        for k, v in values.items()
    }


def audit_values(
    event: str,
    *,
    actor: str,
    occurred_at: datetime,
    key_id: str | None = None,
    username: str | None = None,
    source: str | None = None,
    detail: str = "",
) -> dict:
    """The values of one audit row (checked and clipped), for a caller's own transaction."""
    if event not in EVENTS:
        raise ValueError(f"unknown audit event {event!r}")
    return _clip(
        {
            "event": event,
            "actor": actor or "-",
            "occurred_at": occurred_at,
            "key_id": key_id,
            "username": username,
            "source": source,
            "detail": detail or "",
        }
    )


class AuditStore:
    def __init__(self, engine: Engine):
        self.engine = engine

    def add(self, event: str, *, outbox: OutboxRow | None = None, **fields) -> None:
        """Write one event (``fields``: ``audit_values``'); with ``outbox``, queue that key
        event for the webhooks in the same transaction."""
        values = audit_values(event, **fields)
        with self.engine.begin() as conn:
            conn.execute(sa.insert(AuditEvent).values(**values))
            if outbox is not None:
                conn.execute(outbox_insert(outbox))

    def list(
        self,
        *,
        user: str | None = None,
        since: datetime | None = None,
        event: str | None = None,
        limit: int | None = None,
    ) -> list[AuditRecord]:
        """Events oldest first; ``user`` matches the key's owner or the actor; ``limit``: only
        the newest ``limit``."""
        query = self._select(user=user, since=since, event=event)
        if limit is not None:
            # The newest ``limit`` events, still returned oldest first.
            inner = query.order_by(AuditEvent.id.desc()).limit(limit).subquery()
            query = sa.select(inner).order_by(inner.c.id)
        else:
            query = query.order_by(AuditEvent.id)
        return self._run(query)

    def page(
        self,
        *,
        user: str | None = None,
        owner: str | None = None,
        since: datetime | None = None,
        event: str | None = None,
        key_id: str | None = None,
        after_id: int = 0,
        size: int,
    ) -> list[AuditRecord]:
        """Up to ``size`` events oldest first, after the event ``after_id``; ``user`` as in
        ``list``, ``owner`` matches the key's owner only."""
        query = self._select(user=user, since=since, event=event)
        if owner is not None:
            query = query.where(AuditEvent.username == owner)
        if key_id is not None:
            query = query.where(AuditEvent.key_id == key_id)
        return self._run(query.where(AuditEvent.id > after_id).order_by(AuditEvent.id).limit(size))

    @staticmethod
    def _select(*, user, since, event):
        query = sa.select(
            AuditEvent.id,
            AuditEvent.occurred_at,
            AuditEvent.event,
            AuditEvent.actor,
            AuditEvent.key_id,
            AuditEvent.username,
            AuditEvent.source,
            AuditEvent.detail,
        )
        if user is not None:
            query = query.where(sa.or_(AuditEvent.username == user, AuditEvent.actor == user))
        if since is not None:
            query = query.where(AuditEvent.occurred_at >= since)
        if event is not None:
            query = query.where(AuditEvent.event == event)
        return query

    def _run(self, query) -> list[AuditRecord]:
        with self.engine.connect() as conn:
            return [AuditRecord(**dict(row._mapping)) for row in conn.execute(query)]
