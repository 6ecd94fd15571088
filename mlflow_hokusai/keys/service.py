"""Resolving credentials to an identity, with a short-lived per-process cache.

Cost per request: one SHA-256 and, at most once per ``cache_ttl`` seconds per key, one indexed
query. The cache is bounded in time by ``cache_ttl`` (<= 1 s, the design's staleness bound for
revocation across workers and replicas) and invalidated at once for changes made in this
process.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from cachetools import TTLCache

from mlflow_hokusai.auth.credentials import Credential
from mlflow_hokusai.keys import format as keyformat
from mlflow_hokusai.errors import HokusaiError
from mlflow_hokusai.store.engine import database_unavailable
from mlflow_hokusai.store.keys import KeyRecord, KeyStore, utcnow

_logger = logging.getLogger(__name__)
TOUCH_INTERVAL_SECONDS = 60.0

MISSING_MESSAGE = (
    "Authentication required: send a Hokusai API key as 'Authorization: Bearer <key>' "
    "(set MLFLOW_TRACKING_TOKEN), as 'X-API-Key: <key>', or as the Basic-auth password."
)


@dataclass(frozen=True)
class Identity:
    username: str
    is_admin: bool
    key_id: str | None  # None when the caller logged in with an MLflow password
    scope: str  # "read" or "write"; password logins act with the user's full rights


@dataclass(frozen=True)
class AuthFailure:
    message: str
    # Set when a known key was refused ("expired", "revoked"), for the audit trail.
    reason: str | None = None
    key_id: str | None = None
    username: str | None = None


class Unavailable(HokusaiError):
    """The key database cannot be reached: requests are refused with 503 + Retry-After."""

    def __init__(self):
        super().__init__(
            "TEMPORARILY_UNAVAILABLE",
            "The authentication database is unreachable; no request can be authenticated "
            "right now. Retry later.",
        )


_UNSET = object()


class _NotCached(Exception):
    """A cache-only resolve would need a database lookup."""


class KeyService:
    def __init__(
        self,
        store: KeyStore,
        *,
        cache_ttl: float = 1.0,
        environment: str = "live",
        check_password: Callable[[str, str], bool | None] | None = None,
    ):
        self.store = store
        self.environment = environment
        self._check_password = check_password
        self._ttl = cache_ttl
        self._cache: TTLCache | None = (
            TTLCache(maxsize=100_000, ttl=cache_ttl, timer=time.monotonic) if cache_ttl > 0 else None
        )
        self._lock = threading.Lock()
        self._password_salt = secrets.token_bytes(32)
        self._touched: dict[str, float] = {}
        self._toucher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hokusai-touch")

    # -- cache ----------------------------------------------------------------------------
    def _cached(self, cache_key, load, cached_only: bool = False):
        if self._cache is None:
            if cached_only:
                raise _NotCached
            return load()
        with self._lock:
            value = self._cache.get(cache_key, _UNSET)
        if value is _UNSET:
            if cached_only:
                raise _NotCached
            value = load()
            with self._lock:
                self._cache[cache_key] = value
        return value

    def invalidate(self) -> None:
        """Forget every cached lookup (after a change to keys or users in this process)."""
        if self._cache is not None:
            with self._lock:
                self._cache.clear()

    # -- authentication --------------------------------------------------------------------
    def resolve(
        self, credential: Credential, *, cached_only: bool = False
    ) -> Identity | AuthFailure | None:
        """The caller's identity, or why not. With ``cached_only``, None when the answer needs
        a database lookup: the ASGI gate answers cached keys on the event loop and only goes
        to a worker thread for the rest."""
        if credential.kind == "none":
            return AuthFailure(MISSING_MESSAGE)
        if credential.kind == "malformed":
            return AuthFailure(f"Invalid credentials: {credential.problem}.")
        try:
            if credential.kind == "password":
                return self._resolve_password(
                    credential.username, credential.password, cached_only
                )
            return self._resolve_key(credential.key, cached_only)
        except _NotCached:
            return None
        except Exception as error:
            # Fail closed, and say so: a 503 the client may retry, never a 500 or a pass.
            if database_unavailable(error):
                _logger.warning("key lookup failed: the key database is unreachable (%s)", error)
                raise Unavailable() from error
            raise

    def _resolve_key(self, key: str, cached_only: bool = False) -> Identity | AuthFailure:
        try:
            parsed = keyformat.parse_key(key)
        except keyformat.KeyFormatError as e:
            return AuthFailure(f"Invalid API key: {e}.")
        digest = parsed.digest
        record: KeyRecord | None = self._cached(
            ("key", digest), lambda: self.store.lookup(digest), cached_only
        )
        if record is None:
            return AuthFailure("Invalid API key: no such key.")
        status = record.status()
        if status == "revoked":
            return AuthFailure(
                f"This API key ({record.display_prefix}…) has been revoked.",
                "revoked", record.id, record.username,
            )
        if status == "expired":
            return AuthFailure(
                f"This API key ({record.display_prefix}…) expired at "
                f"{record.expires_at.isoformat()}Z; create a new one.",
                "expired", record.id, record.username,
            )
        if record.user_is_admin is None:
            return AuthFailure("The user who owns this API key no longer exists.")
        self._maybe_touch(record.id)
        return Identity(record.username, record.user_is_admin, record.id, record.scope)

    def _resolve_password(
        self, username: str, password: str, cached_only: bool = False
    ) -> Identity | AuthFailure:
        if self._check_password is None:
            return AuthFailure("Password logins are not enabled on this server.")
        # Cache by a keyed digest so the plaintext password is never held in memory.
        tag = hmac.new(self._password_salt, f"{username}\0{password}".encode(), hashlib.sha256)
        is_admin = self._cached(
            ("password", tag.digest()), lambda: self._check_password(username, password),
            cached_only,
        )
        if is_admin is None:
            return AuthFailure("Invalid username or password.")
        return Identity(username, bool(is_admin), None, "write")

    def _maybe_touch(self, key_id: str) -> None:
        """Record last use at most once a minute per key, off the request's path."""
        now = time.monotonic()
        last = self._touched.get(key_id)
        if last is not None and now - last < TOUCH_INTERVAL_SECONDS:
            return
        self._touched[key_id] = now
        self._toucher.submit(self._touch, key_id)

    def _touch(self, key_id: str) -> None:
        try:
            self.store.touch(key_id, utcnow())
        except Exception:  # a failed bookkeeping write must never fail a request
            _logger.warning("could not record last use of key %s", key_id, exc_info=True)
