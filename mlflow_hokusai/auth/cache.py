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
  racing a read cannot leave the old value cached.

``peek`` never blocks on I/O (the ASGI gate calls it on the event loop); ``get`` loads on a
miss (called in a worker thread).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Hashable

from cachetools import TTLCache

MISS = object()  # peek: nothing cached under this key


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
        with self._lock:
            value = self._entries.get(key, MISS)
            generation = self._generation
        if value is not MISS:
            return value
        value = load()
        if keep is None or keep(value):
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
