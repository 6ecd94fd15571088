"""The federation policy repository: rows in ``hokusai_federation_policies``.

Policies are read from the database on every exchange (no cache), so a policy deleted on any
replica stops matching at once.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mlflow_hokusai.store.clock import utcnow
from mlflow_hokusai.store.models import ExchangedToken, FederationPolicy


@dataclass(frozen=True)
class Policy:
    id: str
    issuer: str
    audience: str
    subject: str  # exact, or a glob (keys/trust_policies.py: * and ? never span ':')
    username: str
    scope: str
    lifetime_seconds: int
    claims: dict = field(default_factory=dict)  # claim -> required value
    rate_limit: str | None = None
    allowed_ips: tuple[str, ...] = ()
    created_at: datetime | None = None
    created_by: str = ""

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "issuer": self.issuer,
            "audience": self.audience,
            "subject": self.subject,
            "claims": dict(self.claims),
            "username": self.username,
            "scope": self.scope,
            "lifetime_seconds": self.lifetime_seconds,
            "rate_limit": self.rate_limit,
            "allowed_ips": list(self.allowed_ips),
            "created_at": self.created_at.replace(tzinfo=timezone.utc).isoformat()
            if self.created_at
            else None,
            "created_by": self.created_by,
        }


class PolicyNotFound(LookupError):
    pass


_TABLE = FederationPolicy.__table__
_TOKENS = ExchangedToken.__table__


def _policy(row) -> Policy:
    values = dict(row._mapping)
    values["claims"] = json.loads(values["claims"] or "{}")
    values["allowed_ips"] = tuple(json.loads(values["allowed_ips"] or "[]"))
    return Policy(**values)


class TrustPolicyStore:
    def __init__(self, engine: Engine):
        self.engine = engine

    def add(
        self,
        *,
        issuer: str,
        audience: str,
        subject: str,
        username: str,
        scope: str,
        lifetime_seconds: int,
        claims: dict,
        rate_limit: str | None,
        allowed_ips: tuple[str, ...],
        created_by: str,
    ) -> Policy:
        values = {
            "id": secrets.token_hex(8),
            "issuer": issuer,
            "audience": audience,
            "subject": subject,
            "claims": json.dumps(claims, sort_keys=True),
            "username": username,
            "scope": scope,
            "lifetime_seconds": lifetime_seconds,
            "rate_limit": rate_limit,
            "allowed_ips": json.dumps(list(allowed_ips)) if allowed_ips else None,
            "created_at": utcnow(),
            "created_by": created_by,
        }
        with self.engine.begin() as conn:
            conn.execute(sa.insert(_TABLE).values(**values))
        return self.get(values["id"])

    def get(self, policy_id: str) -> Policy:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(_TABLE).where(_TABLE.c.id == policy_id)).first()
        if row is None:
            raise PolicyNotFound(policy_id)
        return _policy(row)

    def list(self, issuer: str | None = None) -> list[Policy]:
        query = sa.select(_TABLE).order_by(_TABLE.c.created_at, _TABLE.c.id)
        if issuer is not None:
            query = query.where(_TABLE.c.issuer == issuer)
        with self.engine.connect() as conn:
            return [_policy(row) for row in conn.execute(query)]

    def delete(self, policy_id: str) -> Policy:
        policy = self.get(policy_id)
        with self.engine.begin() as conn:
            conn.execute(sa.delete(_TABLE).where(_TABLE.c.id == policy_id))
        return policy

    def claim_token(
        self, token_id: str, reuse_after: datetime, expires_at: datetime
    ) -> datetime | None:
        """Record an exchange of the token ``token_id`` (a digest): None when it may be
        exchanged now (it may next at ``reuse_after``), else when it may be. One atomic step
        on every worker and replica; rows of expired tokens are deleted as it goes."""
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(sa.delete(_TOKENS).where(_TOKENS.c.expires_at < now))
            added = conn.execute(
                insert(_TOKENS)
                .values(id=token_id, reuse_after=reuse_after, expires_at=expires_at)
                .on_conflict_do_nothing(index_elements=[_TOKENS.c.id])
            )
            if added.rowcount == 1:
                return None
            renewed = conn.execute(
                sa.update(_TOKENS)
                .where(_TOKENS.c.id == token_id, _TOKENS.c.reuse_after <= now)
                .values(reuse_after=reuse_after, expires_at=expires_at)
            )
            if renewed.rowcount == 1:
                return None
            return (
                conn.execute(
                    sa.select(_TOKENS.c.reuse_after).where(_TOKENS.c.id == token_id)
                ).scalar_one_or_none()
                or now
            )
