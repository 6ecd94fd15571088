"""The authenticator: a parsed credential in, an ``Identity`` (or why not) out.

Cost per request: one SHA-256 and, at most once per cache TTL per key and worker, one indexed
query (``store/keys.py``). Lookups go through the worker's one ``LookupCache`` (``cache.py``),
which a change made in this worker clears at once, so a key revoked or rotated here is refused
here on the next request; other workers and replicas follow within the TTL (<= 1 s).

Two entry points, one decision:
- ``peek`` answers from the cache only and never blocks (the ASGI gate calls it on the event
  loop); ``None`` means "not cached: call ``resolve``";
- ``resolve`` may query the database or check a password (call it off the event loop). An
  unreachable database raises ``Unavailable`` (a 503): fail closed, never a pass.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import logging
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from mlflow_hokusai.auth.addresses import in_networks
from mlflow_hokusai.auth.cache import MISS, LookupCache
from mlflow_hokusai.auth.credentials import Credential
from mlflow_hokusai.auth.login_limits import LoginLimits
from mlflow_hokusai.auth.sessions import SessionManager
from mlflow_hokusai.errors import AUTH_DATABASE_DOWN, Unavailable, database_unavailable
from mlflow_hokusai.keys import format as keyformat
from mlflow_hokusai.keys.lifetime import LifetimeRules
from mlflow_hokusai.keys.management import ipv4_of_mapped
from mlflow_hokusai.keys.resource_limits import UNLIMITED, ResourceLimits, from_json
from mlflow_hokusai.metrics import AuthMetrics
from mlflow_hokusai.store.clock import utcnow
from mlflow_hokusai.store.keys import KeyRecord, KeyStore, Scope
from mlflow_hokusai.store.sessions import digest_of

_logger = logging.getLogger(__name__)
TOUCH_INTERVAL_SECONDS = 60.0
_REMEMBERED = 10_000  # keys and (key, address) pairs a worker remembers writing

MISSING_MESSAGE = (
    "Authentication required: send a Hokusai API key as 'Authorization: Bearer <key>' "
    "(set MLFLOW_TRACKING_TOKEN), as 'X-API-Key: <key>', or as the Basic-auth password."
)
# Why a credential was refused. "revoked" and "expired" name a known key (audited).
FailureReason = Literal[
    "missing",
    "malformed",
    "unknown-key",
    "revoked",
    "expired",
    "no-user",
    "bad-password",
    "passwords-off",
    "rate-limited",
    "dormant",
    "ip-not-allowed",
    "session-ended",
]


@dataclass(frozen=True)
class Identity:
    username: str
    is_admin: bool
    key_id: str | None  # None when the caller logged in with an MLflow password
    scope: Scope  # password logins act with the user's full rights ("write")
    expires_at: datetime | None = None  # the key's expiry (naive UTC); None: never / password
    rate_limit: str | None = None  # the key's limit ("N/second|minute|hour"); None: none
    key_prefix: str | None = None  # the key's display prefix (for messages)
    # The experiments and registered models the key is limited to (``keys/resource_limits.py``).
    limits: ResourceLimits = UNLIMITED
    allowed_ips: tuple[str, ...] = ()  # the networks the key may be used from; empty: any
    federated: bool = False  # issued by a token exchange (keys it may manage: none)
    counter_id: str | None = None  # its rate-limit counter: shared with its rotation chain
    session_id: str | None = None  # a signed-in browser's session (``sessions.py``); no key


@dataclass(frozen=True)
class AuthFailure:
    message: str
    reason: FailureReason
    # Set when a known key was refused, for the audit trail.
    key_id: str | None = None
    username: str | None = None
    retry_after: int | None = None  # "rate-limited": seconds until a login may be tried

    @property
    def error_code(self) -> str:
        if self.reason == "rate-limited":
            return "REQUEST_LIMIT_EXCEEDED"
        if self.reason == "ip-not-allowed":  # a valid key, used from the wrong place: 403
            return "PERMISSION_DENIED"
        return "UNAUTHENTICATED"


Result = Identity | AuthFailure


@functools.lru_cache(maxsize=4096)
def _limits(stored: str | None) -> ResourceLimits:
    return from_json(stored)


# fetch(cache key, load) -> the value, or MISS when it is not at hand
_Fetch = Callable[[tuple, Callable[[], object]], object]


class Authenticator:
    def __init__(
        self,
        store: KeyStore,
        cache: LookupCache,
        *,
        check_password: Callable[[str, str], bool | None] | None = None,
        login_limits: LoginLimits | None = None,
        rules: LifetimeRules | None = None,
        metrics: AuthMetrics | None = None,
        sessions: SessionManager | None = None,
    ):
        self.store = store
        self.cache = cache
        self._check_password = check_password
        self.login_limits = login_limits or LoginLimits()
        self.rules = rules or LifetimeRules()
        self.metrics = metrics or AuthMetrics()
        self.sessions = sessions  # None: sign-in is off and no session cookie is accepted
        self._password_salt = secrets.token_bytes(32)
        self._touched: dict[str, float] = {}
        self._toucher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hokusai-touch")

    def peek(self, credential: Credential, peer: str | None = None) -> Result | None:
        """The answer if it needs no I/O, else None (then call ``resolve``). ``peer``: the
        client's address (failed password logins are limited per address)."""
        return self._authenticate(credential, lambda key, load: self.cache.peek(key), peer)

    def resolve(self, credential: Credential, peer: str | None = None) -> Result:
        """The caller's identity, or why not. Raises ``Unavailable`` when the key database
        cannot be reached."""
        try:
            return self._authenticate(credential, self.cache.get, peer)
        except Exception as error:
            if database_unavailable(error):
                _logger.warning("key lookup failed: the key database is unreachable (%s)", error)
                raise Unavailable(AUTH_DATABASE_DOWN) from error
            raise

    def _authenticate(
        self, credential: Credential, fetch: _Fetch, peer: str | None
    ) -> Result | None:
        if credential.kind == "none":
            return AuthFailure(MISSING_MESSAGE, "missing")
        if credential.kind == "malformed":
            return AuthFailure(f"Invalid credentials: {credential.problem}.", "malformed")
        if credential.kind == "password":
            return self._password(credential.username, credential.password, fetch, peer)
        if credential.kind == "session":
            return self._session(credential.key, fetch)
        return self._key(credential.key, fetch, peer)

    def _session(self, secret: str, fetch: _Fetch) -> Result | None:
        """A signed-in browser's session cookie: looked up through the same cache as keys, so
        a revoked session (or a deleted user's) is refused everywhere within the TTL."""
        if self.sessions is None:
            return AuthFailure(
                "Sign-in is not enabled on this server: send an API key.", "session-ended"
            )
        record = fetch(("session", digest_of(secret)), lambda: self.sessions.lookup(secret))
        if record is MISS:
            return None
        refusal = self.sessions.refusal(record)
        if refusal is not None:
            return AuthFailure(refusal, "session-ended", username=getattr(record, "username", None))
        self.sessions.used(secret)
        return Identity(
            record.username, bool(record.user_is_admin), None, "write", session_id=record.id
        )

    def _key(self, key: str, fetch: _Fetch, peer: str | None = None) -> Result | None:
        try:
            digest = keyformat.parse_key(key).digest
        except keyformat.KeyFormatError as e:
            return AuthFailure(f"Invalid API key: {e}.", "malformed")
        looked_up = []

        def lookup():
            looked_up.append(True)
            return self.store.lookup(digest)

        record = fetch(("key", digest), lookup)
        if record is MISS:
            return None
        self.metrics.key_lookup(cache_hit=not looked_up)
        return self._judge(record, peer)

    def _judge(self, record: KeyRecord | None, peer: str | None = None) -> Result:
        if record is None:
            return AuthFailure("Invalid API key: no such key.", "unknown-key")
        refused = self._refusal(record, peer)
        if refused is not None:
            message, reason = refused
            return AuthFailure(message, reason, record.id, record.username)
        if record.user_is_admin is None:
            return AuthFailure("The user who owns this API key no longer exists.", "no-user")
        self._maybe_touch(record.id, peer)
        limits = _limits(record.resource_limits)
        return Identity(
            record.username,
            # A resource-limited key never acts as an admin: MLflow's engine checks each
            # resource for it (admins skip those checks), and the limits cap the answer.
            record.user_is_admin and not limits.limited,
            record.id,
            record.scope,
            record.expires_at,
            record.rate_limit,
            record.display_prefix,
            limits,
            record.allowed_ips,
            record.federated_by is not None,
            record.counter_id,
        )

    def _refusal(self, record: KeyRecord, peer: str | None) -> tuple[str, str] | None:
        """Why the key is refused (message, audit reason), if it is."""
        this = f"This API key ({record.display_prefix}…)"
        # From outside its allowlist a key learns nothing else (not even that it was revoked).
        if record.allowed_ips and not in_networks(peer, self._networks(record.allowed_ips)):
            return f"{this} may not be used from this address.", "ip-not-allowed"
        status = record.status()
        if status == "revoked" and record.replaced_by_prefix:
            return (
                f"{this} was rotated; use its replacement ({record.replaced_by_prefix}…).",
                "revoked",
            )
        if status == "revoked":
            return f"{this} has been revoked.", "revoked"
        if status == "expired":
            return (
                f"{this} expired at {record.expires_at.isoformat()}Z; create a new one.",
                "expired",
            )
        dormant_since = self.rules.dormant_since(record)
        if dormant_since is not None:
            return (
                f"{this} is dormant: it was not used since {dormant_since.isoformat()}Z and "
                f"this server refuses keys unused for {self.rules.unused_after_days} days "
                "(expire_unused_after_days); create a new one.",
                "dormant",
            )
        return None

    @staticmethod
    @functools.lru_cache(maxsize=4096)
    def _networks(allowed: tuple[str, ...]):
        # Entries stored before IPv4-mapped ones were normalised are compared as IPv4 too.
        return tuple(ipv4_of_mapped(ipaddress.ip_network(entry, strict=False)) for entry in allowed)

    def _password(
        self, username: str, password: str, fetch: _Fetch, peer: str | None
    ) -> Result | None:
        if self._check_password is None:
            return AuthFailure("Password logins are not enabled on this server.", "passwords-off")
        wait = self.login_limits.retry_after(peer, username)
        if wait is not None:
            return AuthFailure(
                f"Too many failed password logins from this address or for this user; retry "
                f"in {wait} s (API keys are not affected).",
                "rate-limited",
                username=username,
                retry_after=wait,
            )
        # Cached by a keyed digest so the plaintext password is never held in memory.
        tag = hmac.new(self._password_salt, f"{username}\0{password}".encode(), hashlib.sha256)
        is_admin = fetch(
            ("password", tag.digest()), lambda: self._check_password(username, password)
        )
        if is_admin is MISS:
            return None
        if is_admin is None:
            self.login_limits.failed(peer, username)
            return AuthFailure("Invalid username or password.", "bad-password", username=username)
        return Identity(username, bool(is_admin), None, "write")

    def _maybe_touch(self, key_id: str, peer: str | None = None) -> None:
        """Record last use, and the address it came from, off the request's path: a write
        when this worker has not recorded the key for a minute, or the key from ``peer``."""
        now = time.monotonic()
        key_due = self._due(key_id, now)
        address_due = bool(peer) and self._due((key_id, peer), now)
        if key_due or address_due:
            self._toucher.submit(self._touch, key_id, peer if address_due else None)

    def _due(self, what, now: float) -> bool:
        """Whether ``what`` (a key, or a key and an address) was not recorded for a minute;
        if so, it is now. Forgets what is older than that when the memory grows."""
        last = self._touched.get(what)
        if last is not None and now - last < TOUCH_INTERVAL_SECONDS:
            return False
        if len(self._touched) >= _REMEMBERED:
            recent = {
                k: t for k, t in list(self._touched.items()) if now - t < TOUCH_INTERVAL_SECONDS
            }
            # All recent (many addresses at once): start afresh rather than sift each time.
            self._touched = recent if len(recent) < _REMEMBERED // 2 else {}
        self._touched[what] = now
        return True

    def _touch(self, key_id: str, address: str | None) -> None:
        try:
            self.store.touch(key_id, utcnow(), address)
        except Exception:  # a failed bookkeeping write must never fail a request
            _logger.warning("could not record last use of key %s", key_id, exc_info=True)
