"""Rate-limit counters in the key database: a ``limits`` storage backed by two SQL tables.

The ``limits`` library brings the window strategies and a Redis storage but no SQL one, and the
embedded default (SQLite, several workers) must share counters without a new service. This
module is only the storage: ``limits.MovingWindowRateLimiter`` decides on top of it exactly as
it does on Redis.

A moving window counts the entries of the last ``expiry`` seconds, so no interval of that
length ever holds more than the limit (a fixed or weighted window lets a burst at a window's
end be followed by another at the next one's start). Tables (migration 0007):
``hokusai_rate_counters`` has a row per counter, which every taker locks for the length of one
short transaction (a row lock on PostgreSQL, the write lock on SQLite), so two workers or
replicas can never both take the last permit; ``hokusai_rate_hits`` holds the entries
(``amount`` requests at ``at``). A taker deletes its counter's expired entries as it goes; each
process deletes every expired row at most once a minute.
"""

from __future__ import annotations

import threading
import time

import sqlalchemy as sa
from limits.storage import Storage
from limits.storage.base import MovingWindowSupport
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from mlflow_hokusai.store.engine import insert_for
from mlflow_hokusai.store.models import RateCounter, RateHit

PURGE_INTERVAL_SECONDS = 60.0
_COUNTERS = RateCounter.__table__
_HITS = RateHit.__table__


class SqlCounterStorage(Storage, MovingWindowSupport):
    """A ``limits`` storage in our database: moving windows, plus the basics every ``limits``
    storage has (``incr``/``get``: entries counted until they expire)."""

    STORAGE_SCHEME = None  # not selectable by URI: built from the key database's engine

    def __init__(self, engine: Engine, clock=time.time):
        super().__init__(wrap_exceptions=True)
        self.engine = engine
        self._clock = clock
        self._insert = insert_for(engine.dialect.name)
        self._purged = -PURGE_INTERVAL_SECONDS
        self._purge_lock = threading.Lock()

    @property
    def base_exceptions(self):
        return SQLAlchemyError

    def _lock(self, conn, key: str) -> float:
        """Lock ``key``'s counter row (creating it) until the transaction ends; the time."""
        now = self._clock()
        conn.execute(
            self._insert(_COUNTERS)
            .values(name=key, touched_at=now)
            .on_conflict_do_update(index_elements=[_COUNTERS.c.name], set_={"touched_at": now})
        )
        return self._clock()  # after the wait for the lock

    @staticmethod
    def _sum(conn, key: str, where, also) -> tuple[int, float | None]:
        """(the amounts of ``key``'s entries ``where``, the aggregate ``also`` of them)."""
        total, other = conn.execute(
            sa.select(sa.func.coalesce(sa.func.sum(_HITS.c.amount), 0), also).where(
                _HITS.c.name == key, where
            )
        ).one()
        return int(total), other

    def _used(self, conn, key: str, since: float) -> tuple[int, float | None]:
        """(entries after ``since``, the oldest such entry's time)."""
        return self._sum(conn, key, _HITS.c.at > since, sa.func.min(_HITS.c.at))

    def _add(self, conn, key: str, now: float, expiry: int, amount: int) -> None:
        conn.execute(sa.delete(_HITS).where(_HITS.c.name == key, _HITS.c.at <= now - expiry))
        conn.execute(
            sa.insert(_HITS).values(name=key, at=now, amount=amount, expires_at=now + expiry)
        )

    # -- the moving window -------------------------------------------------------------------
    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        if amount > limit:
            return False
        self._maybe_purge()
        with self.engine.begin() as conn:
            now = self._lock(conn, key)
            used, _ = self._used(conn, key, now - expiry)
            if used + amount > limit:
                return False
            self._add(conn, key, now, expiry, amount)
            return True

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        now = self._clock()
        with self.engine.connect() as conn:
            used, oldest = self._used(conn, key, now - expiry)
        return (now if oldest is None else oldest), used

    # -- what every limits storage has -------------------------------------------------------
    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        """Count ``amount`` more against ``key`` for ``expiry`` seconds; the live total."""
        with self.engine.begin() as conn:
            now = self._lock(conn, key)
            self._add(conn, key, now, expiry, amount)
            return self._live(conn, key, now)[0]

    def _live(self, conn, key: str, now: float) -> tuple[int, float | None]:
        """(entries not expired at ``now``, the latest expiry among them)."""
        return self._sum(conn, key, _HITS.c.expires_at > now, sa.func.max(_HITS.c.expires_at))

    def get(self, key: str) -> int:
        with self.engine.connect() as conn:
            return self._live(conn, key, self._clock())[0]

    def get_expiry(self, key: str) -> float:
        now = self._clock()
        with self.engine.connect() as conn:
            latest = self._live(conn, key, now)[1]
        return now if latest is None else latest

    def check(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.select(1))
        except SQLAlchemyError:
            return False
        return True

    def reset(self) -> int | None:
        with self.engine.begin() as conn:
            conn.execute(sa.delete(_HITS))
            return conn.execute(sa.delete(_COUNTERS)).rowcount

    def clear(self, key: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.delete(_HITS).where(_HITS.c.name == key))
            conn.execute(sa.delete(_COUNTERS).where(_COUNTERS.c.name == key))

    def _maybe_purge(self) -> None:
        """Delete expired entries and counters idle for an hour (the longest period), at most
        once a minute per process; never on two threads at once."""
        now = time.monotonic()
        if now - self._purged < PURGE_INTERVAL_SECONDS or not self._purge_lock.acquire(False):
            return
        try:
            self._purged = now
            wall = self._clock()
            with self.engine.begin() as conn:
                conn.execute(sa.delete(_HITS).where(_HITS.c.expires_at <= wall))
                conn.execute(sa.delete(_COUNTERS).where(_COUNTERS.c.touched_at <= wall - 3600))
        finally:
            self._purge_lock.release()
