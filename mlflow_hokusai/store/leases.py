"""Leases: a job that only one process of all workers and replicas may run at a time (the key
event sender) is run by whoever holds its row in ``hokusai_leases``.

A holder renews its lease while it runs and releases it when it stops; a lease not renewed
(its process died) is taken over once it expires. Taking and renewing are one conditional
UPDATE, which PostgreSQL and SQLite both apply to one row at a time: of two processes racing
for an expired lease, the second finds it held and changes nothing. Times are the processes'
own clocks (epoch seconds): replicas whose clocks differ by less than the lease's length
agree on who holds it.
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from mlflow_hokusai.store.models import Lease


def held(name: str, holder: str, now: float):
    """A condition true while ``holder`` holds lease ``name`` (for a statement that must do
    nothing once the lease is lost)."""
    return sa.exists().where(Lease.name == name, Lease.holder == holder, Lease.expires_at > now)


class LeaseStore:
    def __init__(self, engine: Engine):
        self.engine = engine

    def take(self, name: str, holder: str, seconds: float) -> bool:
        """Take or renew lease ``name`` for ``seconds``: True if ``holder`` holds it now."""
        now = time.time()
        with self.engine.begin() as conn:
            taken = conn.execute(
                sa.update(Lease)
                .where(Lease.name == name, sa.or_(Lease.holder == holder, Lease.expires_at <= now))
                .values(holder=holder, expires_at=now + seconds)
            ).rowcount
        if taken:
            return True
        with self.engine.connect() as conn:
            if conn.execute(sa.select(Lease.name).where(Lease.name == name)).first():
                return False  # held by another
        try:
            with self.engine.begin() as conn:  # the first take of this lease ever
                conn.execute(
                    sa.insert(Lease).values(name=name, holder=holder, expires_at=now + seconds)
                )
        except IntegrityError:
            return False  # another took it first
        return True

    def release(self, name: str, holder: str) -> None:
        """Let another process take lease ``name`` at once (if ``holder`` still holds it)."""
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(Lease)
                .where(Lease.name == name, Lease.holder == holder)
                .values(expires_at=0.0)
            )

    def holder(self, name: str) -> str | None:
        """Who holds lease ``name`` now (None: nobody)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(Lease.holder).where(Lease.name == name, Lease.expires_at > time.time())
            ).first()
        return row[0] if row else None
