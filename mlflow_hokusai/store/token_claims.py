"""Claims: a request that is about to write a Hokusai token id holds one until it finishes.

MLflow's registry store is the truth about which model holds a token id, but two requests
tagging different models with the same id could both look, both see nobody, and both write.
Each such request first records a claim (token, model) in our database, then looks for claims
of the same token by *other* models. Claims are committed before the look, so of two racing
requests the later one always sees the earlier one: at most one of them proceeds (possibly
neither; the caller gets a 409 and may retry). Claims are deleted when the request ends;
a claim left by a crashed worker is ignored after ``ttl`` seconds.

Works across workers and replicas on any database they share (SQLite on one machine,
PostgreSQL beyond).
"""

from __future__ import annotations

import secrets
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mlflow_hokusai.store.clock import utcnow
from mlflow_hokusai.store.models import TokenClaim

DEFAULT_TTL_SECONDS = 60.0
_table = TokenClaim.__table__


class ClaimedElsewhere(Exception):
    """Another model's write of this token id is in flight."""

    def __init__(self, model_name: str):
        super().__init__(model_name)
        self.model_name = model_name


class TokenClaims:
    def __init__(self, engine: Engine, ttl: float = DEFAULT_TTL_SECONDS):
        self.engine = engine
        self.ttl = timedelta(seconds=ttl)

    def acquire(self, token_id: str, model_name: str) -> str:
        """Claim ``token_id`` (case-insensitive) for ``model_name``; return the claim id.
        Raises ClaimedElsewhere if a live claim of another model exists."""
        key = token_id.lower()
        claim_id = secrets.token_hex(16)
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(
                _table.delete().where(
                    _table.c.token_key == key, _table.c.claimed_at < now - self.ttl
                )
            )
            conn.execute(
                _table.insert().values(
                    id=claim_id, token_key=key, model_name=model_name, claimed_at=now
                )
            )
        with self.engine.connect() as conn:
            other = conn.execute(
                sa.select(_table.c.model_name)
                .where(
                    _table.c.token_key == key,
                    _table.c.model_name != model_name,
                    _table.c.claimed_at >= now - self.ttl,
                )
                .limit(1)
            ).scalar()
        if other is not None:
            self.release(claim_id)
            raise ClaimedElsewhere(other)
        return claim_id

    def release(self, claim_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(_table.delete().where(_table.c.id == claim_id))
