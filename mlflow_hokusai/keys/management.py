"""Key management rules: who may create, list, revoke and rotate which keys, and what input
is valid. One implementation shared by the REST endpoints and the offline CLI.

Rules:
- users manage their own keys; admins (and the offline CLI operator) manage anyone's;
- a read-only key may list keys but not create, rotate or revoke any (fail closed: a leaked
  read key must not be able to mint a write key or lock its owner out); nor may a
  resource-limited key or a federated key (from a token exchange) manage any key;
- a key acting on its owner's keys makes nothing broader than itself (``attenuation.py``);
- when an admin creates a key for a user who does not exist yet, the MLflow user is created
  with a random password nobody knows (users log in with keys), as the CLI always has.
Every change is written to the audit trail (``_audit``, the one path), and with key webhooks
on, ``created``, ``rotated`` and ``revoked`` are queued for them in the same transaction
(``keys/webhooks.py``).
"""

from __future__ import annotations

import getpass
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from mlflow_hokusai.config import MAX_LIFETIME_DAYS, parse_rate_limit
from mlflow_hokusai.errors import HokusaiError, invalid_parameter
from mlflow_hokusai.keys import format as keyformat
from mlflow_hokusai.keys.attenuation import Bounds, rate_within
from mlflow_hokusai.keys.audit import AuditLog
from mlflow_hokusai.keys.lifetime import LifetimeRules
from mlflow_hokusai.keys.resource_limits import UNLIMITED, ResourceLimits, from_json, parse_limits
from mlflow_hokusai.keys.webhooks import EVENTS as WEBHOOK_EVENTS
from mlflow_hokusai.keys.webhooks import key_event, revoke_reason
from mlflow_hokusai.store.clock import utcnow
from mlflow_hokusai.store.keys import (
    SCOPES,
    KeyNotFound,
    KeyRecord,
    KeyRevoked,
    KeyStore,
    Scope,
)
from mlflow_hokusai.text import MAX_NAME_LENGTH, check_name, has_unsafe_chars, printable

MAX_EXPIRY_DAYS = MAX_LIFETIME_DAYS  # the longest lifetime any key may be given
LEAK_REPORTER = "secret-scanning"  # the audit trail's actor of a key revoked as leaked
MAX_LEAK_URL_LENGTH = 400  # of the address a leak was found at, in the audit detail


# -- storing keys -----------------------------------------------------------------------------
def store_key(store: KeyStore, key: str, username: str, **fields) -> KeyRecord:
    """Store ``key`` (a plaintext key, validated here) for ``username``: only its digest and
    display prefix reach the database."""
    parsed = keyformat.parse_key(key)
    return store.insert(parsed.digest, parsed.display_prefix, username, **fields)


def issue_key(
    store: KeyStore,
    username: str,
    *,
    environment: str = "live",
    name: str = "",
    scope: Scope = "write",
    expires_in_days: int | None = None,
    allowed_ips: tuple[str, ...] = (),
    rate_limit: str | None = None,
    limits: ResourceLimits = UNLIMITED,
    expires_at: datetime | None = None,
) -> tuple[str, KeyRecord]:
    """Make a new key; return the plaintext (shown once) and its record. ``expires_at``, when
    given, wins over ``expires_in_days``."""
    if expires_at is None and expires_in_days is not None:
        expires_at = utcnow() + timedelta(days=expires_in_days)
    key = keyformat.generate_key(environment)
    record = store_key(
        store,
        key,
        username,
        name=name,
        scope=scope,
        expires_at=expires_at,
        allowed_ips=allowed_ips,
        rate_limit=rate_limit,
        resource_limits=limits.to_json(),
    )
    return key, record


# -- validation (pure) ------------------------------------------------------------------------
def parse_scope(value) -> Scope:
    if value is None:
        return "write"
    if not isinstance(value, str) or value not in SCOPES:
        raise invalid_parameter(
            f"'scope' must be one of {', '.join(repr(s) for s in SCOPES)}, not {value!r}."
        )
    return value


def parse_expiry(value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid_parameter(
            f"'expires_in_days' must be a whole number of days (1 to {MAX_EXPIRY_DAYS}), "
            f"not {value!r}."
        )
    if not 1 <= value <= MAX_EXPIRY_DAYS:
        raise invalid_parameter(
            f"'expires_in_days' must be between 1 and {MAX_EXPIRY_DAYS} days, not {value}; "
            "omit it for a key that does not expire."
        )
    return value


MAX_ALLOWED_IPS = 20


def ipv4_of_mapped(network):
    """``::ffff:10.0.0.0/104`` -> ``10.0.0.0/8``: peers are compared as IPv4 addresses, so an
    IPv4-mapped entry is stored as the IPv4 network it means."""
    import ipaddress

    mapped = ipaddress.ip_network("::ffff:0:0/96")
    if network.version == 6 and network.subnet_of(mapped):
        address = network.network_address.ipv4_mapped
        return ipaddress.ip_network(f"{address}/{max(network.prefixlen - 96, 0)}")
    return network


def parse_allowed_ips(value) -> tuple[str, ...]:
    """Up to 20 IPv4/IPv6 addresses or CIDR ranges, normalised (``10.0.0.1`` ->
    ``10.0.0.1/32``, ``::ffff:10.0.0.1`` -> ``10.0.0.1/32``); an entry with host bits set
    (``10.1.2.3/8``) is refused: it would silently mean its whole network. None or empty: the
    key works from anywhere."""
    import ipaddress

    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise invalid_parameter("'allowed_ips' must be a list of IP addresses or CIDR ranges.")
    if len(value) > MAX_ALLOWED_IPS:
        raise invalid_parameter(
            f"'allowed_ips' may have at most {MAX_ALLOWED_IPS} entries, not {len(value)}."
        )
    networks = []
    for entry in value:
        try:
            if not isinstance(entry, str) or entry != entry.strip() or not entry:
                raise ValueError
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            shown = entry if isinstance(entry, str) else type(entry).__name__
            raise invalid_parameter(
                f"'allowed_ips' entry {shown!r} is not an IPv4 or IPv6 address or CIDR range "
                "(e.g. 203.0.113.7, 10.0.0.0/8, 2001:db8::/32)."
            ) from None
        if "/" in entry and str(network.network_address) != str(
            ipaddress.ip_address(entry.split("/", 1)[0])
        ):
            raise invalid_parameter(
                f"'allowed_ips' entry {entry!r} has host bits set: a range is written with its "
                f"network address ({network} is the range it is in); for one address, drop "
                "the '/…'."
            )
        network = ipv4_of_mapped(network)
        if str(network) not in networks:
            networks.append(str(network))
    return tuple(networks)


NO_RATE_LIMIT = "none"  # stored: the key has no rate limit
UNLIMITED_RATE = "unlimited"  # what people write and read for it


def parse_key_rate_limit(value) -> str | None:
    """A key's ``rate_limit``: ``N/second|minute|hour`` in normal form, ``"unlimited"`` (no
    limit, even where the server has a default; stored as ``"none"``, which is accepted too),
    or None (not given: the server's default)."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() in (UNLIMITED_RATE, NO_RATE_LIMIT):
        return NO_RATE_LIMIT
    try:
        return parse_rate_limit(value)
    except ValueError as e:
        raise invalid_parameter(f"'rate_limit' {e}, or 'unlimited' for no limit.") from None


def parse_name(value) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise invalid_parameter(f"'name' must be a string, not {type(value).__name__}.")
    if len(value) > MAX_NAME_LENGTH:
        raise invalid_parameter(
            f"'name' must be at most {MAX_NAME_LENGTH} characters, not {len(value)}."
        )
    if has_unsafe_chars(value):
        raise invalid_parameter(
            "'name' must not contain control, bidi or other invisible formatting characters."
        )
    return value


def parse_username(value, field: str = "username") -> str:
    return check_name(
        value,
        error=invalid_parameter,
        not_text=f"'{field}' must be a string, not {type(value).__name__}.",
        empty=f"'{field}' must not be empty.",
        too_long=f"'{field}' must be at most {MAX_NAME_LENGTH} characters without control, "
        "bidi or other invisible formatting characters.",
    )


def parse_key_id(value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise invalid_parameter(
            "'key_id' is required: the id shown by api-keys/list (not the key itself)."
        )
    if keyformat.looks_like_key(value.strip()):  # never echo a secret, at most its prefix
        shown = value.strip()[: keyformat.DISPLAY_PREFIX_LENGTH]
        raise invalid_parameter(
            f"'key_id' must be the key's id, as api-keys/list shows it, not the key itself "
            f"({shown}…)."
        )
    if len(value) > 64 or has_unsafe_chars(value):
        raise invalid_parameter("'key_id' is not a valid key id.")
    return value.strip()


def _narrowed(bounds: Bounds, fields: dict, *, days_given, rate_given, ips_given) -> dict:
    """A new key's ``fields`` (scope, expires_at, rate_limit, allowed_ips, limits) made by a key
    acting on its owner's keys: what the request left out is narrowed to the acting key; what
    it asked is checked."""
    fields = dict(fields)
    expires_at = fields["expires_at"]
    late = expires_at is None or (bounds.expires_at is not None and expires_at > bounds.expires_at)
    if not days_given and bounds.expires_at is not None and late:
        fields["expires_at"] = bounds.expires_at
    if not rate_given and not rate_within(fields["rate_limit"], bounds.rate_limit):
        fields["rate_limit"] = bounds.rate_limit
    if not ips_given:
        fields["allowed_ips"] = bounds.allowed_ips
    bounds.check(what="the new key", **fields)
    return fields


def _settings(record: KeyRecord, fields: dict) -> str:
    """A new key's lifetime, allowlist, rate limit and limits, as its audit event shows them."""
    shown = f" expires={record.expires_at.isoformat()}Z" if record.expires_at else ""
    if fields["allowed_ips"]:
        shown += f" allowed_ips={','.join(fields['allowed_ips'])}"
    if fields["rate_limit"]:
        shown += f" rate_limit={fields['rate_limit']}"
    if fields["limits"].to_json():
        shown += f" {fields['limits'].summary()}"
    return shown


def _replaced(record: KeyRecord, experiments, registered_models, workspace, can_create):
    """The key's limits with the fields given replaced (validated for the key's scope)."""
    current = from_json(record.resource_limits)
    given = parse_limits(experiments, registered_models, workspace, can_create, scope=record.scope)
    return ResourceLimits.build(
        given.experiments if experiments is not None else current.experiments,
        given.registered_models if registered_models is not None else current.registered_models,
        given.workspace if workspace is not None else current.workspace,
        given.can_create if can_create is not None else current.can_create,
        limited=current.limited or given.limited,
    )


# -- who is asking ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Actor:
    name: str  # the MLflow username, or "cli:<os user>" for the offline CLI
    is_admin: bool
    scope: Scope = "write"
    source: str | None = None  # peer address, or "local" for the CLI
    # The API key acting, as the bounds of what it may make (None: a password login, the CLI,
    # MLflow itself): see ``attenuation.py``.
    key: Bounds | None = None
    # The display prefix of a resource-limited key acting (None: not limited).
    limited_key: str | None = None
    # The display prefix of a federated key acting (None: not one).
    federated_key: str | None = None
    # The signed-in browser session acting (a root, like a password login; None: not one).
    session: str | None = None

    @classmethod
    def from_identity(cls, identity, source: str | None) -> Actor:
        limits = getattr(identity, "limits", None) or UNLIMITED
        key = None
        if identity.key_id is not None:
            key = Bounds(
                identity.key_prefix or identity.key_id,
                identity.expires_at,
                identity.scope,
                identity.rate_limit,
                tuple(getattr(identity, "allowed_ips", ())),
                limits,
            )
        return cls(
            identity.username,
            identity.is_admin,
            identity.scope,
            source,
            key,
            identity.key_prefix if limits.limited else None,
            identity.key_prefix if getattr(identity, "federated", False) else None,
            getattr(identity, "session_id", None),
        )

    def audited(self) -> dict:
        """The audit trail's ``actor`` and ``source`` of what this actor does."""
        return {"actor": self.name, "source": self.source}

    @classmethod
    def operator(cls) -> Actor:
        """The offline CLI: whoever can open the database is trusted like an admin."""
        try:
            who = getpass.getuser()
        except Exception:  # no user name in the environment (some containers)
            who = "unknown"
        return cls(f"cli:{who}", True, "write", "local")


class UserDirectory(Protocol):
    """The subset of MLflow's auth user store we use."""

    def has_user(self, username: str) -> bool: ...
    def create_user(self, username: str, password: str, is_admin: bool = False): ...
    def get_user(self, username: str): ...
    def update_user(self, username: str, password=None, is_admin=None): ...


# -- the service ------------------------------------------------------------------------------
class KeyManager:
    def __init__(
        self,
        store: KeyStore,
        users: UserDirectory,
        audit: AuditLog,
        *,
        environment: str = "live",
        on_change: Callable[[], None] | None = None,
        on_note: Callable[[str], None] | None = None,
        rules: LifetimeRules | None = None,
        default_rate_limit: str | None = None,
        webhooks: bool = False,
    ):
        self.store = store
        # Queue key events for the webhooks (``key_webhook_urls`` is set).
        self.webhooks = webhooks
        # The limit of keys created without one (None: no default); only admins opt out.
        self.default_rate_limit = default_rate_limit
        self.rules = rules or LifetimeRules()
        self.users = users
        self.audit = audit
        self.environment = environment
        self._on_change = on_change or (lambda: None)
        # Side effects worth telling someone about (the CLI prints them on stderr).
        self._note = on_note or (lambda message: None)

    def _require_write(self, actor: Actor, what: str) -> None:
        if actor.scope != "write":
            raise HokusaiError(
                "PERMISSION_DENIED",
                f"This API key is read-only: it cannot {what}. Use a write key.",
            )
        if actor.limited_key is not None:  # it could mint itself a wider key
            raise HokusaiError(
                "PERMISSION_DENIED",
                f"This API key ({actor.limited_key}…) is limited to named experiments and "
                f"registered models: it cannot {what}. Use a key without resource limits.",
            )
        if actor.federated_key is not None:  # its life is its policy's to decide
            raise HokusaiError(
                "PERMISSION_DENIED",
                f"This API key ({actor.federated_key}…) was issued by a token exchange: it "
                f"cannot {what}. Exchange a new token when it expires (the hokusai plugin "
                "does), or use an ordinary key.",
            )

    @staticmethod
    def _bounds(actor: Actor, owner: str) -> Bounds | None:
        """The acting key's bounds when attenuation applies to a change of ``owner``'s keys:
        a key acting on its owner's keys (an admin acting on another user's is a root)."""
        if actor.key is None or (actor.is_admin and owner != actor.name):
            return None
        return actor.key

    def _limits_for(self, owner: str, limits: ResourceLimits, make_admin: bool = False) -> None:
        """Resource limits are for keys of non-admin users: MLflow's engine skips every
        per-resource check for an admin, so there would be nothing for a limit to cap."""
        if not (limits.limited or limits.workspace is not None):
            return
        is_admin = make_admin
        if not is_admin and self.users.has_user(owner):
            is_admin = bool(self.users.get_user(owner).is_admin)
        if is_admin:
            raise invalid_parameter(
                f"User {owner!r} is an admin, and keys of admins cannot be limited to resources "
                "(an admin passes every per-resource check). Create the key for a non-admin "
                "user, e.g. a service user given permissions on the experiments and models."
            )

    def _owned(self, actor: Actor, key_id: str) -> KeyRecord:
        try:
            record = self.store.get(parse_key_id(key_id))
        except KeyNotFound:
            raise HokusaiError(
                "RESOURCE_DOES_NOT_EXIST", f"There is no API key with id {key_id!r}."
            ) from None
        if not actor.is_admin and record.username != actor.name:
            raise HokusaiError("PERMISSION_DENIED", f"API key {key_id!r} belongs to another user.")
        return record

    def ensure_user(self, actor: Actor, username: str, make_admin: bool = False) -> None:
        """As an admin: make sure ``username`` exists (created with a random password nobody
        knows if missing; made an admin if ``make_admin``)."""
        if not self.users.has_user(username):
            try:
                self.users.create_user(username, secrets.token_urlsafe(32), is_admin=make_admin)
                self._note(f"Created user {username!r}{' (admin)' if make_admin else ''}.")
                self.revoke_user_keys(actor, username, "re-created")
                return
            except Exception:
                if not self.users.has_user(username):  # not just a concurrent creation
                    raise
        if make_admin and not self.users.get_user(username).is_admin:
            self.users.update_user(username, is_admin=True)
            self._note(f"Made user {username!r} an admin.")

    def create(
        self,
        actor: Actor,
        *,
        username=None,
        name=None,
        scope=None,
        expires_in_days=None,
        make_admin: bool = False,
        allowed_ips=None,
        rate_limit=None,
        experiments=None,
        registered_models=None,
        workspace=None,
        can_create=None,
    ) -> tuple[str, KeyRecord]:
        """Create a key; return the plaintext (shown once) and its record."""
        self._require_write(actor, "create keys")
        owner = actor.name if username is None else parse_username(username)
        name, scope = parse_name(name), parse_scope(scope)
        limits = parse_limits(experiments, registered_models, workspace, can_create, scope=scope)
        ips_given = allowed_ips is not None
        allowed_ips = parse_allowed_ips(allowed_ips)
        asked_rate = parse_key_rate_limit(rate_limit)
        rate_limit = self.rate_limit_for(actor, asked_rate)
        asked_days = parse_expiry(expires_in_days)
        expires_in_days = self.rules.expiry_days(asked_days)
        if owner != actor.name and not actor.is_admin:
            raise HokusaiError("PERMISSION_DENIED", "Only admins may create keys for other users.")
        if make_admin and not actor.is_admin:
            raise HokusaiError("PERMISSION_DENIED", "Only admins may make users admins.")
        fields = {
            "scope": scope,
            "expires_at": utcnow() + timedelta(days=expires_in_days) if expires_in_days else None,
            "rate_limit": rate_limit,
            "allowed_ips": allowed_ips,
            "limits": limits,
        }
        bounds = self._bounds(actor, owner)
        if bounds is not None:
            fields = _narrowed(
                bounds,
                fields,
                days_given=asked_days is not None,
                rate_given=asked_rate is not None,
                ips_given=ips_given,
            )
        self._limits_for(owner, limits, make_admin)
        if actor.is_admin:
            self.ensure_user(actor, owner, make_admin)
        key, record = issue_key(
            self.store, owner, environment=self.environment, name=name, **fields
        )
        self._audit(
            "created", actor, record, f"scope={scope} name={name!r}{_settings(record, fields)}"
        )
        return key, record

    def update_limits(
        self,
        actor: Actor,
        key_id,
        *,
        experiments=None,
        registered_models=None,
        workspace=None,
        can_create=None,
        unlimited: bool = False,
    ) -> KeyRecord:
        """Change a key's resource limits: the fields given replace the key's (``[]`` names
        none), the others stay; ``unlimited`` removes them all. Narrowing takes effect within
        the staleness bound; widening never beyond the owner's own rights."""
        self._require_write(actor, "change resource limits")
        record = self._owned(actor, key_id)
        if record.revoked_at is not None:
            raise invalid_parameter(f"API key {record.id!r} is revoked; its limits cannot change.")
        given = (experiments, registered_models, workspace, can_create)
        if unlimited and any(v is not None for v in given):
            raise invalid_parameter("'unlimited' removes every limit: give no other field with it.")
        limits = UNLIMITED if unlimited else _replaced(record, *given)
        self._limits_for(record.username, limits)
        bounds = self._bounds(actor, record.username)
        if bounds is not None:
            self._within(bounds, record, f"API key {record.id!r}")
            self._within(bounds, record, f"API key {record.id!r} with these limits", limits)
        record = self.store.set_limits(record.id, limits.to_json())
        self._on_change()
        self._audit("limited", actor, record, limits.summary() or "unlimited")
        return record

    def add_created(self, key_id: str, kind: str, value: str) -> None:
        """A ``can_create`` key created experiment id (or registered model name) ``value``:
        add it to the key's limits with the key's default ceiling (audited)."""
        from mlflow_hokusai.keys.resource_limits import default_ceiling

        record = self.store.get(key_id)
        added = []

        def change(stored):
            limits = from_json(stored)
            if not limits.limited:
                return stored
            new = limits.with_created(kind, value, default_ceiling(record.scope))
            if new != limits:
                added.append(record)
            return new.to_json()

        self.store.update_limits(key_id, change)
        self._on_change()
        for record in added:  # the key's owner acted, through the key
            self._audit(
                "limited",
                Actor(record.username, False),
                record,
                f"created {kind.replace('_', ' ')} {value!r}: added to the key's limits",
            )

    def rate_limit_for(self, actor: Actor, asked: str | None) -> str | None:
        """The limit a new key gets: the one asked for, else the server's default; no limit
        (``"none"``) where a default exists is for admins only."""
        if asked is None:
            return self.default_rate_limit
        if asked != NO_RATE_LIMIT:
            return asked
        if self.default_rate_limit is not None and not actor.is_admin:
            raise HokusaiError(
                "PERMISSION_DENIED",
                "Only admins may create a key without a rate limit on this server "
                f"(default_rate_limit is {self.default_rate_limit}); pass a 'rate_limit' "
                "such as 1000/hour instead.",
            )
        return None

    def issue_federated(self, policy, *, subject: str, source: str | None):
        """A key for a workload whose token matched federation ``policy``: the policy's user,
        scope, lifetime, rate limit and allowlist; marked with the policy (audited)."""
        key = keyformat.generate_key(self.environment)
        record = store_key(
            self.store,
            key,
            policy.username,
            name=f"federated ({policy.id})",
            scope=policy.scope,
            expires_at=utcnow() + timedelta(seconds=policy.lifetime_seconds),
            allowed_ips=policy.allowed_ips,
            rate_limit=policy.rate_limit,
            federated_by=policy.id,
        )
        self._audit(
            "exchanged",
            Actor(f"federation:{policy.id}", False, source=source),
            record,
            f"subject={subject} scope={policy.scope} expires={record.expires_at.isoformat()}Z",
        )
        return key, record

    @staticmethod
    def _within(
        bounds: Bounds, record: KeyRecord, what: str, limits: ResourceLimits | None = None
    ) -> None:
        """A key broader than the acting key can be neither rotated nor changed by it
        (``limits``: the key's limits as they would be, instead of its stored ones)."""
        bounds.check(
            what=what,
            expires_at=record.expires_at,
            scope=record.scope,
            rate_limit=record.rate_limit,
            allowed_ips=record.allowed_ips,
            limits=from_json(record.resource_limits) if limits is None else limits,
        )

    def _audit(
        self,
        event: str,
        actor: Actor,
        record: KeyRecord,
        detail: str,
        *,
        reason: str | None = None,
        **about,
    ) -> None:
        """An audit event about the key ``record``, by ``actor`` (its name and address). A
        key event (``keys.webhooks.EVENTS``) is also queued for the webhooks, in the same
        transaction: a revocation with its ``reason`` (``keys.webhooks.REVOKE_REASONS``;
        without one, "leaked" for a detail ``leaked: …``, else "user" or "admin"); ``about``:
        more of the event's data (a rotation's replacement)."""
        outbox = None
        if self.webhooks and event in WEBHOOK_EVENTS:
            if event == "revoked" and reason is None:
                reason = revoke_reason(actor.name, record.username, detail)
            outbox = key_event(event, record, actor=actor.name, reason=reason, **about)
        if actor.session is not None:
            detail = (
                f"{detail}; via session {actor.session}"
                if detail
                else (f"via session {actor.session}")
            )
        self.audit.record(
            event,
            key_id=record.id,
            username=record.username,
            detail=detail,
            outbox=outbox,
            **actor.audited(),
        )

    def describe(self, record: KeyRecord) -> dict:
        """The record as the REST API and the CLI show it (status under the lifetime rules)."""
        return self.rules.describe(record)

    def described(self, actor: Actor, records: list[KeyRecord]) -> list[dict]:
        """``describe`` for ``actor``, with ``addresses`` (where each key was last used from,
        newest first) on the keys it owns, or on every key for an admin; nobody else learns
        where another user's key is used."""
        visible = {r.id for r in records if actor.is_admin or r.username == actor.name}
        seen = self.store.addresses(visible) if visible else {}
        described = []
        for record in records:
            shown = self.describe(record)
            if record.id in visible:
                shown["addresses"] = [a.to_dict() for a in seen.get(record.id, [])]
            described.append(shown)
        return described

    def list(self, actor: Actor, *, username=None, everyone: bool = False) -> list[KeyRecord]:
        if everyone:
            if not actor.is_admin:
                raise HokusaiError("PERMISSION_DENIED", "Only admins may list every user's keys.")
            return self.store.list(None)
        owner = actor.name if username is None else parse_username(username)
        if owner != actor.name and not actor.is_admin:
            raise HokusaiError("PERMISSION_DENIED", "You may only list your own keys.")
        return self.store.list(owner)

    def revoke(self, actor: Actor, key_id) -> KeyRecord:
        self._require_write(actor, "revoke keys")
        record = self._owned(actor, key_id)
        if record.revoked_at is not None:
            return record  # idempotent: nothing changed, nothing to audit
        record = self.store.revoke(record.id)
        self._on_change()
        reason = "user" if actor.name == record.username else "admin"
        self._audit("revoked", actor, record, f"name={record.name!r}", reason=reason)
        return record

    def _audit_revoked(
        self, actor: Actor, revoked: list[KeyRecord], detail, reason: str
    ) -> list[KeyRecord]:
        """After a bulk revoke: clear this worker's cache and audit each key revoked
        (``detail(record)``, for ``reason``)."""
        if revoked:
            self._on_change()
        for record in revoked:
            self._audit("revoked", actor, record, detail(record), reason=reason)
        return revoked

    def revoke_leaked(self, key: str, *, url: str, source: str | None) -> KeyRecord | None:
        """Secret scanning found ``key`` (a plaintext key) published at ``url``: revoke it if it
        is a key of ours that still works (audited as ``revoked``, ``leaked: <url>``, by
        ``secret-scanning`` from ``source``, the reporter's address). Returns the revoked key,
        or None when nothing changed: not our key format, no such key, or already revoked,
        expired or rotated out. This worker refuses it at once, the others within the
        staleness bound."""
        try:
            parsed = keyformat.parse_key(key)
        except keyformat.KeyFormatError:
            return None
        record = self.store.revoke_live(parsed.digest)
        if record is None:
            return None
        self._on_change()
        self._audit(
            "revoked",
            Actor(LEAK_REPORTER, False, source=source),
            record,
            f"leaked: {printable(keyformat.redact(url))[:MAX_LEAK_URL_LENGTH]}",
            reason="leaked",
        )
        return record

    def revoke_user_keys(self, actor: Actor, username: str, why: str) -> list[KeyRecord]:
        """The user ``username`` was deleted, or a new user took the name: revoke every key
        under that name (audited), so that ``keys list`` tells the truth and a new user of an
        old name never inherits the old user's keys. A new user has no keys yet."""
        return self._audit_revoked(
            actor,
            self.store.revoke_all(username),
            lambda record: f"owner deleted name={record.name!r}",
            "owner-deleted",
        )

    def revoke_federated(self, actor: Actor, policy_id: str) -> list[KeyRecord]:
        """Federation policy ``policy_id`` was deleted: revoke every live key it issued
        (audited; this worker refuses them at once, the others within the staleness bound)."""
        return self._audit_revoked(
            actor,
            self.store.revoke_federated(policy_id),
            lambda record: f"policy deleted: {policy_id}",
            "policy-deleted",
        )

    def rotate(self, actor: Actor, key_id, grace_seconds=None) -> tuple[str, KeyRecord, KeyRecord]:
        """Issue the replacement of ``key_id`` and end the old key, at once or after the
        overlap window (``grace_seconds``, else the server default): (new key, new record,
        old record)."""
        self._require_write(actor, "rotate keys")
        grace = self.rules.grace(grace_seconds)
        old = self._owned(actor, key_id)
        if old.revoked_at is not None:
            raise invalid_parameter(f"API key {old.id!r} is revoked; create a new key instead.")
        if old.rotation_ends_at is not None:
            raise invalid_parameter(
                f"API key {old.id!r} was already rotated (its replacement is "
                f"{old.replaced_by!r}); rotate or revoke that one instead."
            )
        bounds = self._bounds(actor, old.username)
        if bounds is not None:
            self._within(bounds, old, f"API key {old.id!r}")
            if grace:
                bounds.check_grace(utcnow() + grace)
        key = keyformat.generate_key(self.environment)
        parsed = keyformat.parse_key(key)
        try:
            record = self.store.rotate(
                old.id,
                parsed.digest,
                parsed.display_prefix,
                self.rules.rotated_lifetime(old),
                grace,
                # the replacement outlives neither the acting key nor the server's rules
                expires_by=bounds.expires_at if bounds is not None else None,
            )
        except KeyRevoked:  # revoked (or rotated) by someone else a moment ago
            raise invalid_parameter(
                f"API key {old.id!r} was revoked or rotated meanwhile; create a new key instead."
            ) from None
        self._on_change()
        old = self.store.get(old.id)
        overlap = (
            f" works until {old.rotation_ends_at.isoformat()}Z" if old.rotation_ends_at else ""
        )
        self._audit(
            "rotated",
            actor,
            old,
            f"replaced by {record.id}{overlap} name={old.name!r}",
            replaced_by=record.id,
            replaced_by_prefix=record.display_prefix,
            works_until=old.rotation_ends_at or old.revoked_at,
        )
        return key, record, old
