"""The key repository: rows in ``hokusai_api_keys`` and ``hokusai_settings``.

Lookup by digest is one indexed query that also fetches the owner's admin flag from MLflow's
``users`` table, so authenticating a key costs one round trip whatever the number of keys.
The store never sees a plaintext key: callers (``keys/``) hand in its digest and display
prefix.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Literal, get_args

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from mlflow_hokusai.store import key_addresses
from mlflow_hokusai.store.clock import utcnow
from mlflow_hokusai.store.models import (
    ApiKey,
    Setting,
    mlflow_users,
    owner_is_admin,
    select_with_owner,
)

Scope = Literal["read", "write"]
SCOPES: tuple[Scope, ...] = get_args(Scope)
KEEP_LIFETIME = object()  # rotate: the replacement lives as long as the old key did
# "dormant" is given by the server's lifetime rules (keys/lifetime.py), not by the record.
KeyStatus = Literal["active", "rotating", "expired", "revoked", "dormant"]


@dataclass(frozen=True)
class KeyRecord:
    id: str
    username: str
    name: str
    scope: Scope
    display_prefix: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    # None when the owner no longer exists in MLflow's user table.
    user_is_admin: bool | None = None
    # Set once rotated: the replacement, and for an overlap window when this key stops.
    rotation_ends_at: datetime | None = None
    replaced_by: str | None = None
    replaced_by_prefix: str | None = None
    allowed_ips: tuple[str, ...] = ()  # CIDRs the key may be used from; empty: anywhere
    rate_limit: str | None = None  # "N/second|minute|hour"; None: no limit
    federated_by: str | None = None  # the federation policy it was exchanged under
    resource_limits: str | None = None  # JSON (keys/resource_limits.py); None: unlimited
    lineage: str | None = None  # the first key of its rotation chain (None: itself)

    @property
    def counter_id(self) -> str:
        """The id its rate limit is counted under: one counter for a key and its
        replacements, so rotating never starts a fresh allowance."""
        return self.lineage or self.id

    def status(self, now: datetime | None = None) -> KeyStatus:
        now = now or utcnow()
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        if self.rotation_ends_at is not None:
            return "rotating" if now < self.rotation_ends_at else "revoked"
        return "active"

    def to_dict(self) -> dict:
        def iso(value):
            return value.replace(tzinfo=timezone.utc).isoformat() if value else None

        return {
            "id": self.id,
            "username": self.username,
            "name": self.name,
            "scope": self.scope,
            "prefix": self.display_prefix,
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at),
            "last_used_at": iso(self.last_used_at),
            "revoked_at": iso(self.revoked_at),
            "rotation_ends_at": iso(self.rotation_ends_at),
            "replaced_by": self.replaced_by,
            "allowed_ips": list(self.allowed_ips),
            "rate_limit": self.rate_limit,
            "federated_by": self.federated_by,
            "limits": json.loads(self.resource_limits) if self.resource_limits else None,
            "status": self.status(),
        }


class KeyNotFound(LookupError):
    pass


class KeyRevoked(ValueError):
    """The key was already revoked (e.g. rotated twice at once): it cannot be rotated."""


_COLUMNS = (
    ApiKey.id,
    ApiKey.username,
    ApiKey.name,
    ApiKey.scope,
    ApiKey.display_prefix,
    ApiKey.created_at,
    ApiKey.expires_at,
    ApiKey.last_used_at,
    ApiKey.revoked_at,
    ApiKey.rotation_ends_at,
    ApiKey.replaced_by,
    ApiKey.replaced_by_prefix,
    ApiKey.allowed_ips,
    ApiKey.rate_limit,
    ApiKey.federated_by,
    ApiKey.resource_limits,
    ApiKey.lineage,
)


def _record(row) -> KeyRecord:
    values = dict(row._mapping)
    user_is_admin = owner_is_admin(values)
    values["allowed_ips"] = tuple(json.loads(values["allowed_ips"] or "[]"))
    return KeyRecord(**values, user_is_admin=user_is_admin)


class KeyStore:
    def __init__(self, engine: Engine):
        self.engine = engine

    def _select(self):
        return select_with_owner(_COLUMNS, ApiKey.user_id)

    def lookup(self, digest: str) -> KeyRecord | None:
        """The key with this digest, with its owner's admin flag: one indexed query."""
        with self.engine.connect() as conn:
            row = conn.execute(self._select().where(ApiKey.digest == digest)).first()
        return _record(row) if row else None

    def get(self, key_id: str) -> KeyRecord:
        with self.engine.connect() as conn:
            row = conn.execute(self._select().where(ApiKey.id == key_id)).first()
        if row is None:
            raise KeyNotFound(key_id)
        return _record(row)

    def list(self, username: str | None = None) -> list[KeyRecord]:
        query = self._select().order_by(ApiKey.created_at, ApiKey.id)
        if username is not None:
            query = query.where(ApiKey.username == username)
        with self.engine.connect() as conn:
            return [_record(row) for row in conn.execute(query)]

    def find(self, *conditions) -> list[KeyRecord]:
        """The keys matching SQLAlchemy ``conditions`` on ``ApiKey``, oldest first."""
        query = self._select().where(*conditions).order_by(ApiKey.created_at, ApiKey.id)
        with self.engine.connect() as conn:
            return [_record(row) for row in conn.execute(query)]

    def status_counts(self, now: datetime, dormant_before: datetime | None = None) -> dict:
        """How many keys have each status at ``now`` (as ``KeyRecord.status`` decides it; keys
        active but unused since ``dormant_before`` count as dormant), in one query."""
        ended = sa.and_(ApiKey.rotation_ends_at.isnot(None), ApiKey.rotation_ends_at <= now)
        whens = [
            (ApiKey.revoked_at.isnot(None), "revoked"),
            (sa.and_(ApiKey.expires_at.isnot(None), ApiKey.expires_at <= now), "expired"),
            (ended, "revoked"),
            (ApiKey.rotation_ends_at.isnot(None), "rotating"),
        ]
        if dormant_before is not None:
            last = sa.func.coalesce(ApiKey.last_used_at, ApiKey.created_at)
            whens.append((last <= dormant_before, "dormant"))
        status = sa.case(*whens, else_="active")
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(status, sa.func.count()).group_by(status)).all()
        return {name: count for name, count in rows}

    def insert(
        self,
        digest: str,
        display_prefix: str,
        username: str,
        *,
        name: str = "",
        scope: Scope = "write",
        expires_at: datetime | None = None,
        allowed_ips: tuple[str, ...] = (),
        rate_limit: str | None = None,
        federated_by: str | None = None,
        resource_limits: str | None = None,
        lineage: str | None = None,
        conn=None,
    ) -> KeyRecord:
        """Store a key by its digest; return its record. ``lineage``: the first key of the
        rotation chain it continues (None: it starts one)."""
        owner_id = (
            sa.select(mlflow_users.c.id).where(mlflow_users.c.username == username)
        ).scalar_subquery()
        key_id = secrets.token_hex(8)
        values = {
            "id": key_id,
            "user_id": owner_id,
            "digest": digest,
            "display_prefix": display_prefix,
            "username": username,
            "name": name,
            "scope": scope,
            "created_at": utcnow(),
            "expires_at": expires_at,
            "allowed_ips": json.dumps(list(allowed_ips)) if allowed_ips else None,
            "rate_limit": rate_limit,
            "federated_by": federated_by,
            "resource_limits": resource_limits,
            "lineage": lineage or key_id,
        }
        if conn is None:
            with self.engine.begin() as conn:
                conn.execute(sa.insert(ApiKey).values(**values))
        else:
            conn.execute(sa.insert(ApiKey).values(**values))
        return KeyRecord(
            **{k: values[k] for k in ("id", "username", "name", "scope", "created_at")},
            display_prefix=display_prefix,
            expires_at=expires_at,
            last_used_at=None,
            revoked_at=None,
            allowed_ips=tuple(allowed_ips),
            rate_limit=rate_limit,
            federated_by=federated_by,
            resource_limits=resource_limits,
            lineage=values["lineage"],
        )

    def set_limits(self, key_id: str, resource_limits: str | None) -> KeyRecord:
        """Replace the key's resource limits (JSON from ``keys/resource_limits.py``; None: none)."""
        with self.engine.begin() as conn:
            result = conn.execute(
                sa.update(ApiKey).where(ApiKey.id == key_id).values(resource_limits=resource_limits)
            )
            if result.rowcount == 0:
                raise KeyNotFound(key_id)
        return self.get(key_id)

    def update_limits(self, key_id: str, change) -> KeyRecord:
        """Apply ``change(current JSON) -> new JSON`` to the key's limits in one transaction
        (a row lock where the database has them), so concurrent additions are not lost."""
        with self.engine.begin() as conn:
            query = sa.select(ApiKey.resource_limits).where(ApiKey.id == key_id)
            if conn.dialect.name != "sqlite":
                query = query.with_for_update()
            row = conn.execute(query).first()
            if row is None:
                raise KeyNotFound(key_id)
            new = change(row[0])
            if new != row[0]:
                conn.execute(
                    sa.update(ApiKey).where(ApiKey.id == key_id).values(resource_limits=new)
                )
        return self.get(key_id)

    def revoke(self, key_id: str) -> KeyRecord:
        with self.engine.begin() as conn:
            result = conn.execute(
                sa.update(ApiKey)
                .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
            if (
                result.rowcount == 0
                and conn.execute(sa.select(ApiKey.id).where(ApiKey.id == key_id)).first() is None
            ):
                raise KeyNotFound(key_id)
        return self.get(key_id)

    def rotate(
        self,
        key_id: str,
        digest: str,
        display_prefix: str,
        lifetime=KEEP_LIFETIME,
        grace: timedelta | None = None,
        expires_by: datetime | None = None,
    ) -> KeyRecord:
        """Store the replacement of ``key_id`` (by digest) with the same owner, name, scope,
        policies, lineage and lifetime (or ``lifetime``, a timedelta or None; expiring by
        ``expires_by`` at the latest), and end the old key: at once, or after ``grace``. One
        transaction. Raises KeyRevoked when the old key is already revoked or being
        rotated."""
        old = self.get(key_id)
        if lifetime is KEEP_LIFETIME:
            lifetime = old.expires_at - old.created_at if old.expires_at else None
        with self.engine.begin() as conn:
            now = utcnow()
            expires_at = now + lifetime if lifetime else None
            if expires_by is not None and (expires_at is None or expires_at > expires_by):
                expires_at = expires_by
            record = self.insert(
                digest,
                display_prefix,
                old.username,
                name=old.name,
                scope=old.scope,
                expires_at=expires_at,
                allowed_ips=old.allowed_ips,
                rate_limit=old.rate_limit,
                federated_by=old.federated_by,
                resource_limits=old.resource_limits,
                lineage=old.counter_id,
                conn=conn,
            )
            ends = {"rotation_ends_at": now + grace} if grace else {"revoked_at": now}
            result = conn.execute(
                sa.update(ApiKey)
                .where(
                    ApiKey.id == key_id,
                    ApiKey.revoked_at.is_(None),
                    ApiKey.rotation_ends_at.is_(None),
                )
                .values(replaced_by=record.id, replaced_by_prefix=display_prefix, **ends)
            )
            if result.rowcount == 0:
                raise KeyRevoked(key_id)  # rolls the replacement back
            return record

    def _revoke_where(self, *conditions) -> list[KeyRecord]:
        """Revoke every unrevoked key matching ``conditions`` in one transaction; return the
        keys this call revoked."""
        with self.engine.begin() as conn:
            ids = (
                conn.execute(sa.select(ApiKey.id).where(ApiKey.revoked_at.is_(None), *conditions))
                .scalars()
                .all()
            )
            if ids:
                conn.execute(
                    sa.update(ApiKey)
                    .where(ApiKey.id.in_(ids), ApiKey.revoked_at.is_(None))
                    .values(revoked_at=utcnow())
                )
        return [self.get(key_id) for key_id in ids]

    def revoke_federated(self, policy_id: str) -> list[KeyRecord]:
        """Revoke every live key issued under federation policy ``policy_id`` (rotating ones
        included); return the keys this call revoked."""
        now = utcnow()
        return self._revoke_where(
            ApiKey.federated_by == policy_id,
            sa.or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now),
            sa.or_(ApiKey.rotation_ends_at.is_(None), ApiKey.rotation_ends_at > now),
        )

    def revoke_live(self, digest: str) -> KeyRecord | None:
        """Revoke the key with this digest if it still works (not revoked, not expired, its
        rotation window not over); return it when this call revoked it, else None."""
        now = utcnow()
        with self.engine.begin() as conn:
            # One conditional UPDATE: of two reports of one key at once, one revokes it.
            result = conn.execute(
                sa.update(ApiKey)
                .where(
                    ApiKey.digest == digest,
                    ApiKey.revoked_at.is_(None),
                    sa.or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now),
                    sa.or_(ApiKey.rotation_ends_at.is_(None), ApiKey.rotation_ends_at > now),
                )
                .values(revoked_at=now)
            )
        return self.lookup(digest) if result.rowcount == 1 else None

    def revoke_all(self, username: str) -> list[KeyRecord]:
        """Revoke every unrevoked key of ``username``; return the keys this call revoked."""
        return self._revoke_where(ApiKey.username == username)

    def touch(self, key_id: str, when: datetime, address: str | None = None) -> None:
        """The key was used at ``when`` (from ``address``, when given): one transaction."""
        with self.engine.begin() as conn:
            conn.execute(sa.update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=when))
            if address:
                key_addresses.record(conn, key_id, address, when)

    def addresses(self, key_ids) -> dict[str, list[key_addresses.SeenAddress]]:
        """The addresses each of ``key_ids`` was last used from, newest first (at most
        ``key_addresses.KEPT``); keys never used are left out."""
        with self.engine.connect() as conn:
            return key_addresses.recent(conn, key_ids)

    def has_active_key(self, username: str) -> bool:
        now = utcnow()
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(ApiKey.id).where(
                    ApiKey.username == username,
                    ApiKey.revoked_at.is_(None),
                    sa.or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now),
                )
            ).first()
        return row is not None

    def setting(self, name: str, make_value) -> str:
        """Return the stored setting ``name``, creating it with ``make_value()`` if absent.

        Race-safe: when two processes insert at once, the loser reads the winner's value.
        """
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(Setting.value).where(Setting.name == name)).first()
        if row:
            return row[0]
        try:
            with self.engine.begin() as conn:
                conn.execute(sa.insert(Setting).values(name=name, value=make_value()))
        except IntegrityError:
            pass
        with self.engine.connect() as conn:
            return conn.execute(sa.select(Setting.value).where(Setting.name == name)).scalar_one()
