"""SQLAlchemy models of our own tables (all prefixed ``hokusai_``).

They live in the same database as MLflow's auth tables, so a key can be resolved to its user
in one indexed query, but our schema is migrated by our own alembic chain
(version table ``hokusai_alembic_version``) and never touches MLflow's tables.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import Column, DateTime, Float, Index, Integer, MetaData, String, Table, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    metadata = MetaData()


class ApiKey(Base):
    __tablename__ = "hokusai_api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # Unique and indexed (migration 0001): authentication is one lookup by digest.
    digest: Mapped[str] = mapped_column(String(64), nullable=False, unique=True, index=True)
    display_prefix: Mapped[str] = mapped_column(String(16), nullable=False)
    username: Mapped[str] = mapped_column(String(255), nullable=False, index=True)
    # MLflow's users.id of the owner when the key was made (migration 0004): a user deleted
    # and created again under the same name is another user, and does not get these keys.
    user_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    scope: Mapped[str] = mapped_column(String(16), nullable=False, default="write")
    # Naive UTC everywhere: SQLite keeps no time zone, so we never store one.
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # Rotation (migration 0005): the replacement's id and display prefix, and, for a rotation
    # with an overlap window, when the old key stops working (revoked_at stays empty).
    rotation_ends_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    replaced_by: Mapped[str | None] = mapped_column(String(32), nullable=True)
    replaced_by_prefix: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # The networks the key may be used from, a JSON list of CIDRs (migration 0006); NULL: any.
    allowed_ips: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The key's rate limit, "N/second|minute|hour" (migration 0007); NULL: none.
    rate_limit: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # The federation policy a workload's token was exchanged under (migration 0008); NULL:
    # an ordinary key.
    federated_by: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # The experiments and registered models the key is limited to, as JSON written by
    # ``keys/resource_limits.py`` (migration 0009); NULL: all of its owner's.
    resource_limits: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The first key of its rotation chain (migration 0010): a key and its replacements share
    # it, and with it one rate-limit counter. NULL only on rows no code of ours wrote.
    lineage: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)


class KeyAddress(Base):
    """A client address a key was used from and when it was last seen from there
    (``store/key_addresses.py``, migration 0013): at most five per key, the most recent."""

    __tablename__ = "hokusai_key_addresses"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    address: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)


class FederationPolicy(Base):
    """Which workload tokens may be exchanged for a short-lived key (``store/trust_policies.py``):
    tokens from ``issuer`` for ``audience`` whose subject matches ``subject`` (a glob) and whose
    claims have the values in ``claims`` (JSON), acting as ``username``."""

    __tablename__ = "hokusai_federation_policies"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    issuer: Mapped[str] = mapped_column(String(512), nullable=False, index=True)
    audience: Mapped[str] = mapped_column(String(255), nullable=False)
    subject: Mapped[str] = mapped_column(String(512), nullable=False)
    claims: Mapped[str] = mapped_column(Text, nullable=False, default="{}")
    username: Mapped[str] = mapped_column(String(255), nullable=False)
    scope: Mapped[str] = mapped_column(String(16), nullable=False)
    lifetime_seconds: Mapped[int] = mapped_column(Integer, nullable=False)
    rate_limit: Mapped[str | None] = mapped_column(String(32), nullable=True)
    allowed_ips: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)
    created_by: Mapped[str] = mapped_column(String(255), nullable=False)


class ExchangedToken(Base):
    """A workload token exchanged lately (``store/trust_policies.py``, migration 0010): its digest
    (of issuer and ``jti``, else of the token), when it may be exchanged again, and when it
    expires (the row may go then)."""

    __tablename__ = "hokusai_exchanged_tokens"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    reuse_after: Mapped[datetime] = mapped_column(DateTime, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(DateTime, nullable=False, index=True)


class RateCounter(Base):
    """One rate-limit counter (``store/rate_counters.py``), when the limits live in this
    database (no ``HOKUSAI_RATE_LIMIT_STORAGE``): the row every taker of the counter locks."""

    __tablename__ = "hokusai_rate_counters"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    touched_at: Mapped[float] = mapped_column(Float, nullable=False, index=True)


class RateHit(Base):
    """``amount`` requests counted against counter ``name`` at ``at`` (epoch seconds), until
    ``expires_at``: the entries of a moving window."""

    __tablename__ = "hokusai_rate_hits"
    __table_args__ = (Index("ix_hokusai_rate_hits_name_at", "name", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    at: Mapped[float] = mapped_column(Float, nullable=False)
    amount: Mapped[int] = mapped_column(Integer, nullable=False)
    expires_at: Mapped[float] = mapped_column(Float, nullable=False, index=True)


class BrowserSession(Base):
    """A person signed in through the OpenID provider (``store/sessions.py``, migration 0011):
    the digest of the session id the cookie carries (never the id), whose session it is, and
    its times. ``id`` names it in listings and revocations."""

    __tablename__ = "hokusai_sessions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), nullable=False, unique=True, index=True)
    username: Mapped[str] = mapped_column(String(255), nullable=False, index=True)
    # MLflow's users.id at sign-in: a user deleted and created again does not get the session.
    user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(DateTime, nullable=False, index=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    source: Mapped[str | None] = mapped_column(String(255), nullable=True)
    user_agent: Mapped[str | None] = mapped_column(String(255), nullable=True)


class SignInAttempt(Base):
    """A sign-in under way (``store/sessions.py``): the digest of its ``state``, the PKCE
    verifier and nonce it was started with, where to go after, and until when the callback may
    come. Taken (deleted) by the one callback that uses it: a replayed state finds nothing."""

    __tablename__ = "hokusai_sign_in_attempts"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(128), nullable=False)
    code_verifier: Mapped[str] = mapped_column(String(128), nullable=False)
    next_path: Mapped[str] = mapped_column(String(2048), nullable=False)
    base: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    expires_at: Mapped[datetime] = mapped_column(DateTime, nullable=False, index=True)


class GroupRoleGrant(Base):
    """An MLflow role assignment sign-in made because of a group (``oidc_group_roles``): only
    these are taken away when the person leaves the group (migration 0011)."""

    __tablename__ = "hokusai_group_role_grants"

    user_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    role_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    granted_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)


class Setting(Base):
    """Server-generated secrets (e.g. the Flask secret key) shared by every worker and replica."""

    __tablename__ = "hokusai_settings"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text, nullable=False)


class TokenClaim(Base):
    """A write of a Hokusai token id in flight (see ``store/token_claims.py``)."""

    __tablename__ = "hokusai_token_claims"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    token_key: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    model_name: Mapped[str] = mapped_column(String(256), nullable=False)
    claimed_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)


class AuditEvent(Base):
    """One key lifecycle event or refused key use (see ``store/audit.py``). Never the key."""

    __tablename__ = "hokusai_audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    occurred_at: Mapped[datetime] = mapped_column(DateTime, nullable=False, index=True)
    event: Mapped[str] = mapped_column(String(32), nullable=False)
    actor: Mapped[str] = mapped_column(String(255), nullable=False)
    key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    username: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    source: Mapped[str | None] = mapped_column(String(255), nullable=True)
    detail: Mapped[str] = mapped_column(String(512), nullable=False, default="")


class WebhookDelivery(Base):
    """One key event to POST to every configured receiver (``store/webhooks.py``, migration
    0012): written in the transaction that writes its audit event, sent by the one sender
    holding the ``key-webhooks`` lease. ``payload`` is the exact JSON sent (never the key);
    ``results`` maps each receiver (by ``keys.webhooks.receiver_id``) to ``delivered`` or
    ``failed: …``; ``done_at`` is set once every receiver has one."""

    __tablename__ = "hokusai_webhook_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(String(36), nullable=False, unique=True)
    event: Mapped[str] = mapped_column(String(32), nullable=False)
    key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    payload: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    results: Mapped[str] = mapped_column(Text, nullable=False, default="{}")
    last_error: Mapped[str | None] = mapped_column(String(512), nullable=True)
    done_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True, index=True)


class KeyNotice(Base):
    """A notice sent about a key (``expiring-7d``, ``expiring-1d``, ``dormant``; migration
    0012): the primary key makes each one once per key, whichever replica looks first."""

    __tablename__ = "hokusai_key_notices"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    notice: Mapped[str] = mapped_column(String(16), primary_key=True)
    noticed_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)


class Lease(Base):
    """A job only one process of all workers and replicas may run (``store/leases.py``,
    migration 0012): its holder until ``expires_at`` (epoch seconds), renewed while it runs
    and taken over once expired."""

    __tablename__ = "hokusai_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128), nullable=False)
    expires_at: Mapped[float] = mapped_column(Float, nullable=False)


# MLflow's auth ``users`` table, read-only, only the columns needed to resolve a key's owner in
# the same query. Declared on a separate MetaData so our migrations never manage it.
mlflow_users = Table(
    "users",
    MetaData(),
    Column("id", Integer, primary_key=True),
    Column("username", String(255)),
    Column("is_admin", Integer),
)


def select_with_owner(columns, user_id):
    """``columns`` with the owner's id (``user_id``, None once the user is deleted) and admin
    flag (``is_admin``), outer-joined on ``user_id``; ``owner_is_admin`` reads them back."""
    return sa.select(
        *columns, mlflow_users.c.id.label("user_id"), mlflow_users.c.is_admin
    ).outerjoin(mlflow_users, mlflow_users.c.id == user_id)


def owner_is_admin(values: dict) -> bool | None:
    """Pop what ``select_with_owner`` added from a row's ``values``: the owner's admin flag,
    or None when the owner no longer exists."""
    is_admin = values.pop("is_admin", None)
    has_user = values.pop("user_id", None) is not None
    return bool(is_admin) if has_user else None
