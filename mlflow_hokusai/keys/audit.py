"""Writing the audit trail without letting it slow requests down or be flooded, and reading it
(``AuditLog.events``: the REST ``audit/list`` endpoint and the CLI's online mode).

Lifecycle events (created / rotated / revoked) are written at once by the service that made
the change. Refused uses (expired-use / denied-use) come from the gate, on the request path
of a possibly hostile client: they are written off the request's path, and at most once a
minute per (event, key) per process, so hammering the server with a revoked key adds at most
one row a minute per worker.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

from cachetools import TTLCache

from mlflow_hokusai.config import parse_duration
from mlflow_hokusai.errors import HokusaiError, invalid_parameter
from mlflow_hokusai.store.audit import EVENTS, AuditRecord, AuditStore
from mlflow_hokusai.store.clock import utcnow
from mlflow_hokusai.store.webhooks import OutboxRow

_logger = logging.getLogger(__name__)
REFUSAL_INTERVAL_SECONDS = 60.0
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# A duration with its unit: ``since=90`` is neither a date nor (without a unit) a duration.
_HAS_UNIT = re.compile(r"\d+\s*[smhdw]")
_TOKEN_PREFIX = "after:"


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """An ISO date or date-time (naive = UTC) or a duration ago (``1h``, ``7d``); returns
    naive UTC, as stored. Raises ValueError."""
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


def _page_size(value) -> int:
    if value is None or value == "":
        return DEFAULT_PAGE_SIZE
    try:
        size = int(value)
    except (TypeError, ValueError):
        size = 0
    if not 1 <= size <= MAX_PAGE_SIZE or str(value).strip() != str(size):
        raise invalid_parameter(f"'max_results' must be a whole number from 1 to {MAX_PAGE_SIZE}.")
    return size


def _after(page_token) -> int:
    if not page_token:
        return 0
    try:
        text = base64.urlsafe_b64decode(str(page_token).encode() + b"==").decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    if not text.startswith(_TOKEN_PREFIX) or not text[len(_TOKEN_PREFIX) :].isdigit():
        raise invalid_parameter("'page_token' is not a page token this server gave.")
    return int(text[len(_TOKEN_PREFIX) :])


def _token(after_id: int) -> str:
    return base64.urlsafe_b64encode(f"{_TOKEN_PREFIX}{after_id}".encode()).decode().rstrip("=")


class AuditLog:
    def __init__(self, store: AuditStore, *, refusal_interval: float = REFUSAL_INTERVAL_SECONDS):
        self.store = store
        self._recent: TTLCache = TTLCache(
            maxsize=100_000, ttl=refusal_interval, timer=time.monotonic
        )
        self._lock = threading.Lock()
        self._writer: ThreadPoolExecutor | None = None

    def record(self, event: str, *, actor: str, outbox: OutboxRow | None = None, **fields) -> None:
        """Write a lifecycle event now (with ``outbox``, the key event to send to the webhooks,
        in the same transaction). A failed audit write is logged, never raised: the change it
        describes has already happened."""
        try:
            self.store.add(event, actor=actor, occurred_at=utcnow(), outbox=outbox, **fields)
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
        self._denied_use(identity, f"read-only key: {request_line}", source)

    def limited_refusal(self, identity, request_line: str, source: str | None) -> None:
        """A resource-limited key was refused (outside its limits, or a route it may not use)."""
        self._denied_use(identity, f"resource-limited key: {request_line}", source)

    def _denied_use(self, identity, detail: str, source: str | None) -> None:
        if identity.key_id is None:
            return
        self.refused(
            "denied-use",
            key_id=identity.key_id,
            username=identity.username,
            source=source,
            detail=detail,
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

    def events(
        self,
        actor,
        *,
        username: str | None = None,
        event: str | None = None,
        since: str | None = None,
        key_id: str | None = None,
        max_results=None,
        page_token: str | None = None,
    ) -> tuple[list[AuditRecord], str | None]:
        """One page of events, oldest first, and the token of the next page (None: the last).
        ``actor`` (``keys.management.Actor``): an admin sees every event and ``username``
        matches the key's owner or the actor, as in the CLI; anyone else sees only the
        events about their own keys and account."""
        if event is not None and event not in EVENTS:
            raise invalid_parameter(f"'event' must be one of {', '.join(EVENTS)}.")
        try:
            since_at = parse_since(since) if since else None
        except ValueError as error:
            raise invalid_parameter(f"'since' is not a time: {error}.") from None
        size, after_id = _page_size(max_results), _after(page_token)
        filters = {"since": since_at, "event": event, "key_id": key_id or None}
        if actor.is_admin:
            filters["user"] = username or None
        elif username and username != actor.name:
            raise HokusaiError(
                "PERMISSION_DENIED", "Only admins can see the audit events of other users."
            )
        else:
            filters["owner"] = actor.name
        records = self.store.page(**filters, after_id=after_id, size=size + 1)
        if len(records) > size:
            return records[:size], _token(records[size - 1].id)
        return records, None

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
