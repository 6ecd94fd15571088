"""The key event outbox (``hokusai_webhook_outbox``) and the notices sent about keys
(``hokusai_key_notices``).

A key event's row is inserted in the transaction that writes its audit event
(``store/audit.py``), so an event is audited and queued together or not at all. The sender
(``keys/webhook_sender.py``) reads pending rows oldest first, counts an attempt on a row only
while it still holds the sender's lease (``claim``), and records each receiver's result;
a row is done once every configured receiver has one. An ``expiring`` or ``dormant``
notice is its notice row, its audit event and its outbox row in one transaction: the notice's
primary key makes it once per key.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from mlflow_hokusai.store.clock import utcnow
from mlflow_hokusai.store.keys import KeyRecord, KeyStore
from mlflow_hokusai.store.leases import held
from mlflow_hokusai.store.models import ApiKey, AuditEvent, KeyNotice, WebhookDelivery

MAX_ERROR = 512


@dataclass(frozen=True)
class OutboxRow:
    """A key event to send: ``payload`` is the exact JSON every receiver gets."""

    delivery_id: str
    event: str
    key_id: str | None
    payload: str
    created_at: datetime


@dataclass(frozen=True)
class Pending:
    """An event not yet answered by every receiver; ``results``: receiver id -> result."""

    id: int
    delivery_id: str
    event: str
    payload: str
    created_at: datetime
    attempts: int
    results: dict


def outbox_insert(row: OutboxRow):
    """The statement queuing ``row`` (run in the caller's transaction)."""
    return sa.insert(WebhookDelivery).values(
        delivery_id=row.delivery_id,
        event=row.event,
        key_id=row.key_id,
        payload=row.payload,
        created_at=row.created_at,
        attempts=0,
        results="{}",
    )


class WebhookStore:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.keys = KeyStore(engine)

    # -- the outbox ---------------------------------------------------------------------------
    def pending(self, limit: int = 100) -> list[Pending]:
        """Up to ``limit`` events not done, oldest first."""
        query = (
            sa.select(
                WebhookDelivery.id,
                WebhookDelivery.delivery_id,
                WebhookDelivery.event,
                WebhookDelivery.payload,
                WebhookDelivery.created_at,
                WebhookDelivery.attempts,
                WebhookDelivery.results,
            )
            .where(WebhookDelivery.done_at.is_(None))
            .order_by(WebhookDelivery.id)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [Pending(**{**row._mapping, "results": json.loads(row.results)}) for row in rows]

    def claim(self, row_id: int, lease: str, holder: str) -> dict | None:
        """Count an attempt on event ``row_id`` before sending it, if ``holder`` still holds
        ``lease`` and the event is not done: its results so far; else None (do not send)."""
        with self.engine.begin() as conn:
            counted = conn.execute(
                sa.update(WebhookDelivery)
                .where(
                    WebhookDelivery.id == row_id,
                    WebhookDelivery.done_at.is_(None),
                    held(lease, holder, time.time()),
                )
                .values(attempts=WebhookDelivery.attempts + 1)
            ).rowcount
            if not counted:
                return None
            query = sa.select(WebhookDelivery.results).where(WebhookDelivery.id == row_id)
            return json.loads(conn.execute(query).scalar_one())

    def record(
        self, row_id: int, results: dict, receivers: set[str], error: str | None = None
    ) -> bool:
        """Add ``results`` (receiver id -> ``delivered`` or ``failed: …``) to event
        ``row_id``; it is done once every one of ``receivers`` has a result. Returns done."""
        this = WebhookDelivery.id == row_id
        with self.engine.begin() as conn:
            # Write first: the row is locked (PostgreSQL) and the database's write lock taken
            # (SQLite, where a read-then-write transaction can fail at once if another process
            # wrote in between) before the results are read.
            conn.execute(
                sa.update(WebhookDelivery).where(this).values(attempts=WebhookDelivery.attempts)
            )
            query = sa.select(WebhookDelivery.results).where(this)
            merged = {**json.loads(conn.execute(query).scalar_one()), **results}
            values = {"results": json.dumps(merged, sort_keys=True)}
            if error is not None:
                values["last_error"] = error[:MAX_ERROR]
            done = receivers <= set(merged)
            if done:
                values["done_at"] = utcnow()
            conn.execute(sa.update(WebhookDelivery).where(this).values(**values))
        return done

    def delivered_ids(self) -> list[str]:
        """The delivery ids of events every receiver answered (for tests and operators)."""
        query = sa.select(WebhookDelivery.delivery_id).where(WebhookDelivery.done_at.isnot(None))
        with self.engine.connect() as conn:
            return list(conn.execute(query.order_by(WebhookDelivery.id)).scalars())

    # -- notices ------------------------------------------------------------------------------
    def add_notice(self, key_id: str, notice: str, audit: dict, outbox: OutboxRow) -> bool:
        """Record notice ``notice`` about key ``key_id`` with its audit event (``audit``: the
        row's values, ``store.audit.audit_values``) and its outbox row, in one transaction.
        False (and nothing written) when the key already had this notice."""
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    sa.insert(KeyNotice).values(
                        key_id=key_id, notice=notice, noticed_at=outbox.created_at
                    )
                )
                conn.execute(sa.insert(AuditEvent).values(**audit))
                conn.execute(outbox_insert(outbox))
        except IntegrityError:
            return False
        return True

    def expiring(self, now: datetime, after: datetime, until: datetime, notice: str):
        """Live keys (see ``_live``) expiring in (``after``, ``until``] without ``notice``."""
        return self.keys.find(
            *_live(now),
            ApiKey.expires_at > after,
            ApiKey.expires_at <= until,
            _without(notice),
        )

    def unused(self, now: datetime, cutoff: datetime, notice: str) -> list[KeyRecord]:
        """Live keys last used (or made, if never used) at or before ``cutoff``, without
        ``notice``: dormant under ``keys.lifetime``'s rule."""
        last = sa.func.coalesce(ApiKey.last_used_at, ApiKey.created_at)
        return self.keys.find(*_live(now), last <= cutoff, _without(notice))


def _live(now: datetime) -> tuple:
    """Keys worth a notice: not revoked, not expired, not replaced by a rotation, not issued
    by a token exchange (a CI run's short-lived key; the next run gets another)."""
    return (
        ApiKey.revoked_at.is_(None),
        ApiKey.replaced_by.is_(None),
        ApiKey.federated_by.is_(None),
        sa.or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now),
    )


def _without(notice: str):
    return ~sa.exists().where(KeyNotice.key_id == ApiKey.id, KeyNotice.notice == notice)
