"""Key event webhooks: what is sent and how it is signed (settings ``key_webhook_urls``,
``key_webhook_secret``).

Events: ``created``, ``rotated``, ``revoked`` (with its reason), ``expiring`` (7 days and
1 day before) and ``dormant``; ``ping`` from ``mlflow-hokusai webhooks test``. The body is
MLflow's webhook envelope (``entity``, ``action``, ``timestamp``, ``data``) plus the event
name and delivery id; ``data`` describes the key by id and display prefix, never the key or
its digest.

Signed exactly as MLflow signs its registry webhooks (``mlflow/webhooks/delivery.py``), so a
receiver written for those verifies ours unchanged: ``X-MLflow-Signature: v1,<base64
HMAC-SHA256 over "<delivery id>.<timestamp>.<body>">``, ``X-MLflow-Timestamp`` (Unix seconds
at sending) and ``X-MLflow-Delivery-Id`` (the same for every retry of one event: receivers
dedupe on it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import urlsplit

import requests

import mlflow_hokusai
from mlflow_hokusai.store.clock import utcnow
from mlflow_hokusai.store.keys import KeyRecord
from mlflow_hokusai.store.webhooks import OutboxRow

EVENTS = ("created", "rotated", "revoked", "expiring", "dormant")
PING = "ping"
# Why a key was revoked: by its owner, by an admin (or the offline CLI), because its owner
# was deleted (or the name re-created), because the trust policy that issued it was deleted,
# or because it was reported leaked.
REVOKE_REASONS = ("user", "admin", "owner-deleted", "policy-deleted", "leaked")
ENTITY = "api_key"
SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"
SIGNATURE_VERSION = "v1"
TIMEOUT = (5.0, 10.0)  # seconds to connect, and to wait for the answer
SERVER_ACTOR = "server"  # the actor of notices


def _iso(value: datetime | None) -> str | None:
    return value.replace(tzinfo=timezone.utc).isoformat() if value else None


def key_data(record: KeyRecord, actor: str) -> dict:
    """What an event says about the key ``record``: never the key, never its digest."""
    return {
        "key_id": record.id,
        "key_prefix": record.display_prefix,
        "owner": record.username,
        "name": record.name,
        "scope": record.scope,
        "created_at": _iso(record.created_at),
        "expires_at": _iso(record.expires_at),
        "last_used_at": _iso(record.last_used_at),
        "actor": actor,
    }


def event_row(event: str, data: dict, key_id: str | None, now: datetime | None = None):
    """The outbox row of one event: a new delivery id, and the exact JSON to send."""
    now = now or utcnow()
    delivery_id = str(uuid.uuid4())
    body = {
        "delivery_id": delivery_id,
        "event": event,
        "entity": ENTITY,
        "action": event,
        "timestamp": _iso(now),
        "data": data,
    }
    return OutboxRow(delivery_id, event, key_id, json.dumps(body), now)


def key_event(
    event: str,
    record: KeyRecord,
    *,
    actor: str,
    reason: str | None = None,
    now: datetime | None = None,
    **details,
) -> OutboxRow:
    """The outbox row of key event ``event`` about ``record`` by ``actor`` (``reason``: a
    revocation's, one of ``REVOKE_REASONS``; ``details``: more of ``data``)."""
    if event not in EVENTS:
        raise ValueError(f"unknown key event {event!r}")
    data = key_data(record, actor)
    if reason is not None:
        if reason not in REVOKE_REASONS:
            raise ValueError(f"unknown revocation reason {reason!r}")
        data["reason"] = reason
    data.update({k: _iso(v) if isinstance(v, datetime) else v for k, v in details.items()})
    return event_row(event, data, record.id, now)


def revoke_reason(actor: str, owner: str, detail: str) -> str:
    """The reason of a revocation audited without one: reported leaked (the audit detail
    says ``leaked: …``), by the key's owner, or else by an admin (or the offline CLI)."""
    if detail.startswith("leaked"):
        return "leaked"
    return "user" if actor == owner else "admin"


def ping_row() -> OutboxRow:
    """The ``ping`` that ``mlflow-hokusai webhooks test`` sends."""
    return event_row(PING, {"message": "mlflow-hokusai key webhooks test"}, None)


# -- signing (MLflow's format, byte for byte) --------------------------------------------------
def sign(secret: str, delivery_id: str, timestamp: str, payload: str) -> str:
    """``v1,<base64 HMAC-SHA256 of "delivery_id.timestamp.payload">``, as MLflow signs."""
    signed = f"{delivery_id}.{timestamp}.{payload}".encode()
    digest = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('utf-8')}"


def signed_headers(secret: str, delivery_id: str, payload: str, timestamp: int | None = None):
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    return {
        "Content-Type": "application/json",
        "User-Agent": f"mlflow-hokusai/{mlflow_hokusai.__version__}",
        DELIVERY_ID_HEADER: delivery_id,
        TIMESTAMP_HEADER: stamp,
        SIGNATURE_HEADER: sign(secret, delivery_id, stamp, payload),
    }


# -- receivers ---------------------------------------------------------------------------------
def receiver_id(url: str) -> str:
    """How the outbox names a receiver: not its URL, which may hold a token."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def shown_url(url: str) -> str:
    """``url`` as logs and the CLI show it: scheme, host and path, without a user, password
    or query (which may hold a token)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


@dataclass(frozen=True)
class Answer:
    """A receiver's answer: its HTTP status, or why there was none."""

    status: int | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def __str__(self) -> str:
        if self.status is None:
            return self.error or "no answer"
        return f"HTTP {self.status}"


def post(session: requests.Session, url: str, secret: str, row) -> Answer:
    """POST the event ``row`` (an ``OutboxRow`` or a pending one) to ``url``, signed now.
    Redirects are not followed: only a 2xx answer counts as delivered."""
    headers = signed_headers(secret, row.delivery_id, row.payload)
    try:
        response = session.post(
            url,
            data=row.payload.encode("utf-8"),
            headers=headers,
            timeout=TIMEOUT,
            allow_redirects=False,
        )
    except requests.RequestException as e:
        return Answer(None, f"{type(e).__name__}: could not reach the receiver")
    response.close()
    return Answer(response.status_code)
