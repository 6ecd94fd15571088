"""Browser sessions of people signed in through the OpenID provider (``routes/sign_in.py``).

A session is a random id in an ``HttpOnly`` cookie (``COOKIE``); the key database holds only
its SHA-256 digest (``store/sessions.py``). The authenticator looks a session up through the
worker's one ``LookupCache`` like a key (``authenticator.py``), so a session revoked, signed
out, or whose user was deleted is refused by every worker and replica within the cache's TTL
(<= 1 s) and by the worker that made the change at once (``on_change``).

A session ends at ``lifetime`` after sign-in, or after ``idle_timeout`` without a request
(its last use is recorded at most once a minute per worker, off the request's path).
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from mlflow_hokusai.auth.credentials import SESSION_COOKIE
from mlflow_hokusai.keys.audit import AuditLog
from mlflow_hokusai.store.clock import utcnow
from mlflow_hokusai.store.sessions import SessionRecord, SessionStore, digest_of

_logger = logging.getLogger(__name__)
COOKIE = SESSION_COOKIE
TOUCH_INTERVAL_SECONDS = 60.0
_SECRET = re.compile(r"[A-Za-z0-9_-]{43}")
ENDED_MESSAGE = "Your sign-in session has ended ({why}); sign in again at /hokusai/login."


def looks_like_session(value: str) -> bool:
    """True for what ``SessionManager.open`` puts in a cookie (32 random bytes, base64url)."""
    return _SECRET.fullmatch(value) is not None


@dataclass(frozen=True)
class Opened:
    secret: str  # the cookie's value: shown to the browser once, never stored
    session_id: str  # the public id (listings, revocation, the audit trail)


class SessionManager:
    def __init__(
        self,
        store: SessionStore,
        audit: AuditLog,
        *,
        lifetime: int,
        idle_timeout: int,
        on_change=lambda: None,
    ):
        self.store = store
        self.audit = audit
        self.lifetime = lifetime
        self.idle_timeout = idle_timeout
        self.on_change = on_change
        # A session's last use is written at most this often (well within the idle timeout).
        self.touch_interval = min(TOUCH_INTERVAL_SECONDS, idle_timeout / 4)
        self._touched: dict[str, float] = {}
        self._toucher: ThreadPoolExecutor | None = None

    def open(
        self, username: str, user_id: int | None, *, source: str | None, user_agent: str | None
    ) -> Opened:
        """A new session for ``username`` (always a fresh id: no fixation), audited."""
        secret = secrets.token_urlsafe(32)
        session_id = self.store.add(
            digest_of(secret),
            username,
            user_id,
            now=utcnow(),
            lifetime=self.lifetime,
            source=source,
            user_agent=user_agent,
        )
        self.audit.record(
            "signed-in",
            actor=username,
            username=username,
            source=source,
            detail=f"session {session_id}",
        )
        return Opened(secret, session_id)

    def lookup(self, secret: str) -> SessionRecord | None:
        return self.store.lookup(digest_of(secret))

    def refusal(self, record: SessionRecord | None) -> str | None:
        """Why this session may not be used now (the 401's message), or None."""
        if record is None:
            return ENDED_MESSAGE.format(why="unknown session")
        status = record.status(utcnow(), self.idle_timeout)
        if status == "revoked":
            return ENDED_MESSAGE.format(why="signed out or revoked")
        if status == "expired":
            return ENDED_MESSAGE.format(why="it reached its lifetime")
        if status == "idle":
            return ENDED_MESSAGE.format(why="unused for too long")
        if record.user_is_admin is None:
            return ENDED_MESSAGE.format(why="the user no longer exists")
        return None

    def used(self, secret: str) -> None:
        """Record the session's use, at most once a minute per session and worker."""
        digest = digest_of(secret)
        now = time.monotonic()
        last = self._touched.get(digest)
        if last is not None and now - last < self.touch_interval:
            return
        self._touched[digest] = now
        if self._toucher is None:
            self._toucher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hokusai-session")
        self._toucher.submit(self._touch, digest)

    def _touch(self, digest: str) -> None:
        try:
            self.store.touch(digest, utcnow())
        except Exception:  # bookkeeping must never fail a request
            _logger.warning("could not record the use of a session", exc_info=True)

    def sign_out(self, secret: str, source: str | None) -> SessionRecord | None:
        """End the session carried by ``secret``; audited when it was live."""
        ended = self.store.revoke_digest(digest_of(secret), utcnow())
        self.on_change()
        if ended is not None:
            self.audit.record(
                "signed-out",
                actor=ended.username,
                username=ended.username,
                source=source,
                detail=f"session {ended.id}",
            )
        return ended

    def revoke(
        self,
        actor: str,
        source: str | None,
        *,
        session_id: str | None = None,
        username: str | None = None,
        why: str = "",
    ) -> list[SessionRecord]:
        """Revoke one session or all of a user's; each is audited (``session-revoked``)."""
        revoked = self.store.revoke(utcnow(), session_id=session_id, username=username)
        self.on_change()
        for record in revoked:
            detail = f"session {record.id}" + (f": {why}" if why else "")
            self.audit.record(
                "session-revoked",
                actor=actor,
                username=record.username,
                source=source,
                detail=detail,
            )
        return revoked

    def list(self, username: str | None = None, *, everything: bool = False):
        """Sessions, newest first: live ones (idle included), or ``everything``."""
        return self.store.list(username, active_at=None if everything else utcnow())

    def describe(self, record: SessionRecord) -> dict:
        return record.to_dict(utcnow(), self.idle_timeout)
