"""Writing the audit trail without letting it slow requests down or be flooded.

Lifecycle events (created / rotated / revoked) are written at once by the service that made
the change. Refused uses (expired-use / denied-use) come from the gate, on the request path
of a possibly hostile client: they are written off the request's path, and at most once a
minute per (event, key) per process, so hammering the server with a revoked key adds at most
one row a minute per worker.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from cachetools import TTLCache

from mlflow_hokusai.store.audit import AuditStore
from mlflow_hokusai.store.clock import utcnow

_logger = logging.getLogger(__name__)
REFUSAL_INTERVAL_SECONDS = 60.0


class AuditLog:
    def __init__(self, store: AuditStore, *, refusal_interval: float = REFUSAL_INTERVAL_SECONDS):
        self.store = store
        self._recent: TTLCache = TTLCache(
            maxsize=100_000, ttl=refusal_interval, timer=time.monotonic
        )
        self._lock = threading.Lock()
        self._writer: ThreadPoolExecutor | None = None

    def record(self, event: str, *, actor: str, **fields) -> None:
        """Write a lifecycle event now. A failed audit write is logged, never raised: the
        change it describes has already happened."""
        try:
            self.store.add(event, actor=actor, occurred_at=utcnow(), **fields)
        except Exception:
            _logger.warning("could not write audit event %s", event, exc_info=True)

    def refused(
        self,
        event: str,
        *,
        key_id: str,
        username: str | None,
        source: str | None,
        detail: str,
        record_key_id: bool = True,
    ) -> None:
        """Note a refused use of ``key_id`` (at most once a minute per (event, key_id, source);
        written in the background). ``record_key_id=False``: ``key_id`` only groups the events
        (no key is involved)."""
        with self._lock:
            if (event, key_id, source) in self._recent:
                return
            self._recent[(event, key_id, source)] = True
            if self._writer is None:
                self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hokusai-audit")
        actor = username or "-"
        when = utcnow()
        recorded = key_id if record_key_id else None
        self._writer.submit(self._write, event, actor, when, recorded, username, source, detail)

    def failed_login(self, failure, source: str | None) -> None:
        """A credential was refused at authentication (``auth.authenticator.AuthFailure``): a
        known key (revoked, expired), or password logins limited after too many failures.
        Unknown or malformed keys and single wrong passwords are not recorded: anyone can
        send those."""
        if failure.reason == "rate-limited":
            self.refused(
                "login-limited",
                key_id=f"login:{failure.username}",
                username=failure.username,
                source=source,
                detail="too many failed password logins",
                record_key_id=False,
            )
            return
        if failure.key_id is None:
            return
        event = "expired-use" if failure.reason in ("expired", "dormant") else "denied-use"
        detail = (
            f"address {source} not allowed"
            if failure.reason == "ip-not-allowed"
            else f"{failure.reason} key"
        )
        self.refused(
            event, key_id=failure.key_id, username=failure.username, source=source, detail=detail
        )

    def read_only_refusal(self, identity, request_line: str, source: str | None) -> None:
        """A read-only key tried something that is not a read."""
        if identity.key_id is None:
            return
        self.refused(
            "denied-use",
            key_id=identity.key_id,
            username=identity.username,
            source=source,
            detail=f"read-only key: {request_line}",
        )

    def rate_limited(self, identity, verdict, source: str | None) -> None:
        """A key went over its rate limit (at most once a minute per key and address)."""
        self.refused(
            "rate-limited",
            key_id=identity.key_id,
            username=identity.username,
            source=source,
            detail=f"over its rate limit of {verdict.policy}",
        )

    def _write(self, event, actor, when, key_id, username, source, detail) -> None:
        try:
            self.store.add(
                event,
                actor=actor,
                occurred_at=when,
                key_id=key_id,
                username=username,
                source=source,
                detail=detail,
            )
        except Exception:
            _logger.warning("could not write audit event %s", event, exc_info=True)
