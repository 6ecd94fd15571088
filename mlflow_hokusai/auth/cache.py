"""The one per-worker cache of authentication and authorization lookups.

Key lookups (digest -> key record), password checks and MLflow's authorization lookups (user
row, role grants) all go through one ``LookupCache`` per worker (a run's experiment, which
never changes, is remembered apart: ``_mlflow.patches.cache_authorization_lookups``):

- entries live at most ``ttl`` seconds (HOKUSAI_AUTH_CACHE_TTL_SECONDS, <= 1 s), so other
  workers and replicas see a change within the design's staleness bound; ``ttl`` 0 turns it
  off (every lookup loads);
- every change made in this worker (a key revoked or rotated, a user, permission or role
  written through MLflow's auth store) clears it at once, so the worker that made a change
  never serves the old answer;
- a lookup that started before a clear is not stored after it (generation check), so a write
  racing a read cannot leave the old value cached;
- a refusal is decided on fresh data: another worker or replica may have just granted what a
  cached answer lacks (a user creates an experiment there, then uses it here), so where MLflow's
  engine refuses or leaves something out of a listing, the decision is taken again with every
  lookup loaded anew (``tracking_cached_answers`` tells whether a cached answer was used,
  ``fresh_lookups`` loads and stores anew; ``_mlflow.patches.decide_refusals_on_fresh_data``
  wires them around the engine's decisions). What is allowed may still come from the cache.

``peek`` never blocks on I/O (the ASGI gate calls it on the event loop); ``get`` loads on a
miss (called in a worker thread).
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from contextvars import ContextVar

from cachetools import TTLCache

MISS = object()  # peek: nothing cached under this key

# Set by ``fresh_lookups``: every ``get`` in this context loads (and stores the new answer).
_fresh: ContextVar[bool] = ContextVar("hokusai_fresh_lookups", default=False)
# Set by ``tracking_cached_answers``: a list that gets an entry whenever ``get`` answers from
# the cache in this context.
_served: ContextVar[list | None] = ContextVar("hokusai_cached_answers", default=None)


@contextlib.contextmanager
def tracking_cached_answers() -> Iterator[list]:
    """A list of the lookups in the block answered from a cache: (cache, key, value, load)."""
    served: list = []
    token = _served.set(served)
    try:
        yield served
    finally:
        _served.reset(token)


@contextlib.contextmanager
def fresh_lookups() -> Iterator[None]:
    """Within the block every lookup loads anew (and refreshes the cache)."""
    token = _fresh.set(True)
    try:
        yield
    finally:
        _fresh.reset(token)


def _same(a, b) -> bool:
    if a == b:
        return True
    # entities without __eq__ (MLflow's User): the same type with the same attributes
    return type(a) is type(b) and hasattr(a, "__dict__") and vars(a) == vars(b)


def _all_still_true(served: list) -> bool:
    """Load every cached answer ``served`` held anew (refreshing the cache): True when none
    changed, so a decision taken on them stands."""
    unchanged = True
    for cache, key, value, load in served:
        if not _same(cache.refresh(key, load), value):
            unchanged = False
    return unchanged


@contextlib.contextmanager
def clean_request() -> Iterator[None]:
    """A request starts tracking nothing and loading nothing afresh, whatever an earlier
    request left in the context (under uvicorn a kept-alive connection's later requests can
    inherit an earlier request's context values)."""
    served, fresh = _served.set(None), _fresh.set(False)
    try:
        yield
    finally:
        _fresh.reset(fresh)
        _served.reset(served)


def decided_on_fresh_data(decide: Callable[[], object], refused: Callable[[object], bool]):
    """``decide()``; when ``refused(result)`` and the decision used a cached answer that has
    changed since, the result of ``decide()`` again with fresh lookups. (Re-reading the
    answers is one query each; deciding again, e.g. filtering a long listing, may cost more.)"""
    with tracking_cached_answers() as served:
        result = decide()
    if not served or not refused(result) or _all_still_true(served):
        return result
    with fresh_lookups():
        return decide()


async def decided_on_fresh_data_async(decide, refused: Callable[[object], bool]):
    """``decided_on_fresh_data`` for a coroutine function ``decide``."""
    with tracking_cached_answers() as served:
        result = await decide()
    if not served or not refused(result) or _all_still_true(served):
        return result
    with fresh_lookups():
        return await decide()


class LookupCache:
    def __init__(self, ttl: float, maxsize: int = 100_000):
        self._entries: TTLCache | None = (
            TTLCache(maxsize=maxsize, ttl=ttl, timer=time.monotonic) if ttl > 0 else None
        )
        self._lock = threading.Lock()
        self._generation = 0

    def peek(self, key: Hashable):
        """The cached value of ``key``, or ``MISS``. Never loads."""
        if self._entries is None:
            return MISS
        with self._lock:
            return self._entries.get(key, MISS)

    def get(
        self,
        key: Hashable,
        load: Callable[[], object],
        keep: Callable[[object], bool] | None = None,
    ):
        """The cached value of ``key``, else ``load()`` (stored when ``keep`` allows it and no
        clear happened while it ran)."""
        if self._entries is None:
            return load()
        fresh = _fresh.get()
        with self._lock:
            value = MISS if fresh else self._entries.get(key, MISS)
            generation = self._generation
        if value is not MISS:
            served = _served.get()
            if served is not None:
                served.append((self, key, value, load))
            return value
        value = load()
        if keep is None or keep(value):
            with self._lock:
                if generation == self._generation:
                    self._entries[key] = value
        return value

    def refresh(self, key: Hashable, load: Callable[[], object]):
        """``load()``, stored under ``key`` (unless a clear happened while it ran)."""
        with self._lock:
            generation = self._generation
        value = load()
        if self._entries is not None:
            with self._lock:
                if generation == self._generation:
                    self._entries[key] = value
        return value

    def cached(self, kind: str, function: Callable) -> Callable:
        """``function`` with its results cached by (kind, arguments); exceptions pass through
        uncached."""

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            key = (kind, _freeze(args), _freeze(tuple(sorted(kwargs.items()))))
            try:
                hash(key)
            except TypeError:  # an argument we cannot key on: do not cache this call
                return function(*args, **kwargs)
            return self.get(key, lambda: function(*args, **kwargs))

        return wrapper

    def invalidating(self, function: Callable) -> Callable:
        """``function`` followed by a clear of this cache (also when it raises: a write may
        have half-happened)."""

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            try:
                return function(*args, **kwargs)
            finally:
                self.clear()

        return wrapper

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            if self._entries is not None:
                self._entries.clear()


def _freeze(value):
    """A hashable stand-in for arguments (sets and lists become frozensets and tuples)."""
    if isinstance(value, (set, frozenset)):
        return frozenset(_freeze(v) for v in value)
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    return value
