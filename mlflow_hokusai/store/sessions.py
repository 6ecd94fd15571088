"""The session repository: rows in ``hokusai_sessions`` and ``hokusai_sign_in_attempts``.

A session is found by the SHA-256 digest of the id its cookie carries, in one indexed query
that also reads its owner's admin flag from MLflow's ``users`` table (as a key lookup does), so
a deleted user's session finds no user. The store never sees a session id: callers
(``auth/sessions.py``) hand in its digest.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mlflow_hokusai.store.models import (
    BrowserSession,
    GroupRoleGrant,
    SignInAttempt,
    owner_is_admin,
    select_with_owner,
)

SessionStatus = Literal["active", "idle", "expired", "revoked"]
_CLIPPED = {"source": 255, "user_agent": 255}


def digest_of(secret: str) -> str:
    """The stored form of a session id or a sign-in ``state``."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class SessionRecord:
    id: str
    username: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    source: str | None
    user_agent: str | None
    user_is_admin: bool | None = None  # None: the user no longer exists

    def status(self, now: datetime, idle_timeout: int) -> SessionStatus:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at <= now:
            return "expired"
        if self.last_seen_at + timedelta(seconds=idle_timeout) <= now:
            return "idle"
        return "active"

    def to_dict(self, now: datetime, idle_timeout: int) -> dict:
        def iso(value):
            return value.replace(tzinfo=timezone.utc).isoformat() if value else None

        return {
            "id": self.id,
            "username": self.username,
            "created_at": iso(self.created_at),
            "last_seen_at": iso(self.last_seen_at),
            "expires_at": iso(self.expires_at),
            "revoked_at": iso(self.revoked_at),
            "source": self.source,
            "user_agent": self.user_agent,
            "status": self.status(now, idle_timeout),
        }


@dataclass(frozen=True)
class Attempt:
    """A sign-in under way, as the callback needs it."""

    nonce: str
    code_verifier: str
    next_path: str
    base: str


_COLUMNS = (
    BrowserSession.id,
    BrowserSession.username,
    BrowserSession.created_at,
    BrowserSession.last_seen_at,
    BrowserSession.expires_at,
    BrowserSession.revoked_at,
    BrowserSession.source,
    BrowserSession.user_agent,
)


def _record(row) -> SessionRecord:
    values = dict(row._mapping)
    user_is_admin = owner_is_admin(values)
    return SessionRecord(**values, user_is_admin=user_is_admin)


class SessionStore:
    def __init__(self, engine: Engine):
        self.engine = engine

    def _select(self):
        return select_with_owner(_COLUMNS, BrowserSession.user_id)

    # -- sessions --------------------------------------------------------------------------
    def add(
        self,
        digest: str,
        username: str,
        user_id: int | None,
        *,
        now: datetime,
        lifetime: int,
        source: str | None = None,
        user_agent: str | None = None,
    ) -> str:
        """Store a new session (by the digest of its id); returns its public id."""
        session_id = secrets.token_hex(8)
        values = {"source": source, "user_agent": user_agent}
        values = {k: (v[: _CLIPPED[k]] if v else None) for k, v in values.items()}
        with self.engine.begin() as conn:
            conn.execute(
                sa.insert(BrowserSession).values(
                    id=session_id,
                    digest=digest,
                    username=username,
                    user_id=user_id,
                    created_at=now,
                    last_seen_at=now,
                    expires_at=now + timedelta(seconds=lifetime),
                    **values,
                )
            )
        return session_id

    def lookup(self, digest: str) -> SessionRecord | None:
        """The session with this digest and its owner's admin flag: one indexed query."""
        with self.engine.connect() as conn:
            row = conn.execute(self._select().where(BrowserSession.digest == digest)).first()
        return _record(row) if row else None

    def get(self, session_id: str) -> SessionRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(self._select().where(BrowserSession.id == session_id)).first()
        return _record(row) if row else None

    def list(self, username: str | None = None, *, active_at: datetime | None = None):
        """Sessions, newest first; ``active_at``: only those neither revoked nor expired
        then (idle ones included: their status says so)."""
        query = self._select().order_by(BrowserSession.created_at.desc(), BrowserSession.id)
        if username is not None:
            query = query.where(BrowserSession.username == username)
        if active_at is not None:
            query = query.where(
                BrowserSession.revoked_at.is_(None), BrowserSession.expires_at > active_at
            )
        with self.engine.connect() as conn:
            return [_record(row) for row in conn.execute(query)]

    def touch(self, digest: str, now: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(BrowserSession)
                .where(BrowserSession.digest == digest, BrowserSession.revoked_at.is_(None))
                .values(last_seen_at=now)
            )

    def revoke(
        self, now: datetime, *, session_id: str | None = None, username: str | None = None
    ) -> list[SessionRecord]:
        """Revoke one session (by id), or every session of ``username``; returns those that
        were live until now."""
        where = [BrowserSession.revoked_at.is_(None)]
        if session_id is not None:
            where.append(BrowserSession.id == session_id)
        if username is not None:
            where.append(BrowserSession.username == username)
        if session_id is None and username is None:
            raise ValueError("revoke needs a session id or a user name")
        with self.engine.begin() as conn:
            rows = conn.execute(self._select().where(*where)).all()
            ids = [row.id for row in rows]
            if ids:
                conn.execute(
                    sa.update(BrowserSession)
                    .where(BrowserSession.id.in_(ids), BrowserSession.revoked_at.is_(None))
                    .values(revoked_at=now)
                )
        return [_record(row) for row in rows]

    def revoke_digest(self, digest: str, now: datetime) -> SessionRecord | None:
        """Revoke the session with this digest (signing out); returns it if it was live."""
        record = self.lookup(digest)
        if record is None or record.revoked_at is not None:
            return None
        return next(iter(self.revoke(now, session_id=record.id)), None)

    def purge(self, before: datetime, now: datetime) -> int:
        """Delete sessions that ended (expired or revoked) before ``before`` and sign-ins that
        expired before ``now``; returns how many sessions went."""
        ended = sa.or_(BrowserSession.expires_at < before, BrowserSession.revoked_at < before)
        with self.engine.begin() as conn:
            removed = conn.execute(sa.delete(BrowserSession).where(ended)).rowcount
            conn.execute(sa.delete(SignInAttempt).where(SignInAttempt.expires_at < now))
        return removed

    # -- sign-ins under way ----------------------------------------------------------------
    def start_sign_in(self, state_digest: str, attempt: Attempt, expires_at: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                sa.insert(SignInAttempt).values(
                    id=state_digest,
                    nonce=attempt.nonce,
                    code_verifier=attempt.code_verifier,
                    next_path=attempt.next_path,
                    base=attempt.base,
                    expires_at=expires_at,
                )
            )

    def take_sign_in(self, state_digest: str, now: datetime) -> Attempt | None:
        """The sign-in started with this state, deleted in the same transaction: only one
        callback ever gets it (a replayed state gets None), and none after it expired."""
        with self.engine.begin() as conn:
            row = conn.execute(
                sa.select(
                    SignInAttempt.nonce,
                    SignInAttempt.code_verifier,
                    SignInAttempt.next_path,
                    SignInAttempt.base,
                    SignInAttempt.expires_at,
                ).where(SignInAttempt.id == state_digest)
            ).first()
            if row is None:
                return None
            taken = conn.execute(
                sa.delete(SignInAttempt).where(SignInAttempt.id == state_digest)
            ).rowcount
        if taken != 1 or row.expires_at <= now:
            return None
        return Attempt(row.nonce, row.code_verifier, row.next_path, row.base)

    # -- role assignments made by group ----------------------------------------------------
    def role_grants(self, user_id: int) -> set[int]:
        with self.engine.connect() as conn:
            query = sa.select(GroupRoleGrant.role_id).where(GroupRoleGrant.user_id == user_id)
            return {row[0] for row in conn.execute(query)}

    def add_role_grant(self, user_id: int, role_id: int, now: datetime) -> None:
        with self.engine.begin() as conn:
            exists = conn.execute(
                sa.select(GroupRoleGrant.role_id).where(
                    GroupRoleGrant.user_id == user_id, GroupRoleGrant.role_id == role_id
                )
            ).first()
            if exists is None:
                conn.execute(
                    sa.insert(GroupRoleGrant).values(
                        user_id=user_id, role_id=role_id, granted_at=now
                    )
                )

    def remove_role_grant(self, user_id: int, role_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                sa.delete(GroupRoleGrant).where(
                    GroupRoleGrant.user_id == user_id, GroupRoleGrant.role_id == role_id
                )
            )
