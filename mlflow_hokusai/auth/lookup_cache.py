"""A short-lived per-worker cache for MLflow's authorization lookups.

MLflow's auth engine looks the caller up (user row, role grants) and, for run routes, loads the
whole run just to learn its experiment, several times per request. With a key that resolves
from cache, those lookups are most of what authentication and authorization cost (see
README, Performance). This cache sits in front of them:

- entries live at most ``ttl`` seconds (the configured HOKUSAI_AUTH_CACHE_TTL_SECONDS, <= 1 s),
  so other workers and replicas see a change within the design's staleness bound;
- every write through MLflow's auth store in this worker (a user, permission or role created,
  changed or deleted, by a REST call or by a hook such as "creator gets MANAGE") clears it at
  once, together with the key cache, so the worker that made a change never serves the old
  answer;
- a lookup that started before a clear is not stored after it (generation check), so a write
  racing a read cannot leave the old value cached.
"""

from __future__ import annotations

import functools
import threading
import time
from typing import Callable

from cachetools import TTLCache

_MISS = object()


class LookupCache:
    def __init__(self, ttl: float, maxsize: int = 50_000):
        self.ttl = ttl
        self._entries: TTLCache = TTLCache(maxsize=maxsize, ttl=ttl, timer=time.monotonic)
        self._lock = threading.Lock()
        self._generation = 0
        self._listeners: list[Callable[[], None]] = []

    def get(self, key, load: Callable[[], object], keep: Callable[[object], bool] | None = None):
        """The cached value of ``key``, else ``load()`` (stored when ``keep`` allows it)."""
        with self._lock:
            value = self._entries.get(key, _MISS)
            generation = self._generation
        if value is not _MISS:
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

    def on_clear(self, listener: Callable[[], None]) -> None:
        """Also run ``listener`` on every clear (e.g. the key cache, whose entries carry the
        owner's admin flag)."""
        self._listeners.append(listener)

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._entries.clear()
        for listener in self._listeners:
            listener()


def _freeze(value):
    """A hashable stand-in for arguments (sets and lists become frozensets and tuples)."""
    if isinstance(value, (set, frozenset)):
        return frozenset(_freeze(v) for v in value)
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    return value


def install(ttl: float, key_service) -> LookupCache | None:
    """Cache MLflow's authorization lookups in this worker for ``ttl`` seconds (0: off); a
    clear also clears ``key_service``'s key cache. Work that always gives the same answer
    (route matching, redaction of responses with nothing to redact) is skipped whatever the
    TTL."""
    from mlflow_hokusai import _mlflow

    _mlflow.skip_redundant_request_work()
    if ttl <= 0:
        return None
    cache = LookupCache(ttl)
    cache.on_clear(key_service.invalidate)
    _mlflow.cache_authorization_lookups(cache)
    return cache
