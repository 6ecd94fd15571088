"""Per-key rate limits, global across workers and replicas.

A key may carry a limit, ``N/second|minute|hour``. It is enforced by the ``limits`` library's
moving-window strategy over a shared store: the key database by default
(``store/rate_counters.py``; SQLite or PostgreSQL, so the embedded server needs no new
service), or any ``limits`` storage URI in ``HOKUSAI_RATE_LIMIT_STORAGE`` (``redis://…`` for
scale-out). Every worker of every replica takes from the same counter, so the limit holds
globally, and in any interval of the period, not only in calendar windows.

To keep the store off most requests, a worker takes permits in small batches: up to
``limit // 200`` at a time (1 for limits under 400 per period) in one atomic step, and spends
them locally within half a period. Permits taken never exceed the limit; a worker's unspent
batch may be spent just after the store counted it, so with W busy workers any interval of
the period admits at most limit * (1 + W/200) (1 % over for 2 workers, 2 % for 4). A refused key
is remembered locally until the oldest counted request leaves the window, so hammering a
limited key costs the store about one call per freed permit.

``peek`` answers from local state only (the ASGI gate calls it on the event loop); ``None``
means "call ``check``", which may reach the store. When the store cannot be reached,
``rate_limit_unavailable`` decides: ``open`` serves the request and logs a warning (at most once
a minute), ``closed`` raises ``Unavailable`` (503).
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from dataclasses import dataclass

from cachetools import LRUCache
from limits import parse
from limits.strategies import MovingWindowRateLimiter

from mlflow_hokusai.errors import RATE_LIMIT_STORE_DOWN, Unavailable

_logger = logging.getLogger(__name__)
BATCH_FRACTION = 200  # a batch is at most 1/200 of the limit
WARN_INTERVAL_SECONDS = 60.0
MAX_LOCAL_ENTRIES = 50_000


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    limit: int
    remaining: int
    reset: int  # seconds until the oldest counted request leaves the window
    policy: str  # the key's limit, e.g. "1000/hour"

    def headers(self) -> list[tuple[str, str]]:
        """``RateLimit-*`` (IETF draft), and ``Retry-After`` when refused."""
        headers = [
            ("RateLimit-Limit", str(self.limit)),
            ("RateLimit-Remaining", str(self.remaining)),
            ("RateLimit-Reset", str(self.reset)),
        ]
        if not self.allowed:
            headers.append(("Retry-After", str(self.reset)))
        return headers

    def message(self, prefix: str | None) -> str:
        return (
            f"This API key ({prefix}…) is over its rate limit of {self.policy}; retry in "
            f"{self.reset} s."
        )


@functools.lru_cache(maxsize=256)
def _item(rate: str):
    return parse(rate)


@dataclass
class _Batch:
    taken_at: float
    left: int  # permits this worker may still spend
    remaining: int  # what the store had left after the batch was taken
    reset_at: float  # when the oldest counted request leaves the window


def _seconds(until: float, now: float) -> int:
    return max(1, math.ceil(until - now))


class RateLimits:
    def __init__(self, storage, *, fail_open: bool = True, clock=time.time):
        self.storage = storage
        self._limiter = MovingWindowRateLimiter(storage)
        self.fail_open = fail_open
        self._clock = clock
        self._lock = threading.Lock()
        # Bounded (one entry per key and limit, or per address for token exchanges): an
        # entry pushed out costs one trip to the store, never a wrong answer.
        self._batches: LRUCache = LRUCache(MAX_LOCAL_ENTRIES)  # (key, limit) -> _Batch
        self._blocked: LRUCache = LRUCache(MAX_LOCAL_ENTRIES)  # (key, limit) -> until
        self._warned = -math.inf

    # -- local state (no I/O) ----------------------------------------------------------------
    def peek(self, key_id: str, rate: str) -> Verdict | None:
        """The verdict if it needs no I/O, else None."""
        item = _item(rate)
        now = self._clock()
        slot = (key_id, rate)
        with self._lock:
            until = self._blocked.get(slot)
            if until is not None:
                if now < until:
                    return Verdict(False, item.amount, 0, _seconds(until, now), rate)
                del self._blocked[slot]
            batch = self._batches.get(slot)
            if batch is None or batch.left <= 0 or now - batch.taken_at > item.get_expiry() / 2:
                return None
            batch.left -= 1
            remaining = batch.remaining + batch.left
        return Verdict(True, item.amount, remaining, _seconds(batch.reset_at, now), rate)

    # -- the store ---------------------------------------------------------------------------
    def check(self, key_id: str, rate: str) -> Verdict | None:
        """The verdict for one request by ``key_id``. May reach the store. When it cannot:
        None (serve, with no ``RateLimit-*`` headers) when the server fails open, else raises
        ``Unavailable``."""
        verdict = self.peek(key_id, rate)
        if verdict is not None:
            return verdict
        item = _item(rate)
        period = item.get_expiry()
        name = f"key/{key_id}"
        batch = max(1, item.amount // BATCH_FRACTION)
        try:
            taken = batch if self._limiter.hit(item, name, cost=batch) else 0
            if not taken and batch > 1:
                taken = 1 if self._limiter.hit(item, name) else 0
            oldest, used = self.storage.get_moving_window(item.key_for(name), item.amount, period)
        except Exception as error:
            return self._unreachable(error)
        now = self._clock()
        slot = (key_id, rate)
        reset_at = oldest + period
        if taken:
            remaining = max(0, item.amount - used)
            with self._lock:
                self._batches[slot] = _Batch(now, taken - 1, remaining, reset_at)
            return Verdict(True, item.amount, remaining + taken - 1, _seconds(reset_at, now), rate)
        with self._lock:
            self._blocked[slot] = reset_at
            self._batches.pop(slot, None)
        return Verdict(False, item.amount, 0, _seconds(reset_at, now), rate)

    def _unreachable(self, error: Exception) -> None:
        now = time.monotonic()
        if now - self._warned >= WARN_INTERVAL_SECONDS:
            self._warned = now
            _logger.warning(
                "rate-limit store unreachable (%s: %s); %s",
                type(error).__name__,
                error,
                "serving rate-limited keys without a limit (rate_limit_unavailable = open)"
                if self.fail_open
                else "refusing rate-limited keys with 503 (rate_limit_unavailable = closed)",
            )
        if not self.fail_open:
            raise Unavailable(RATE_LIMIT_STORE_DOWN) from error
        return None


def rate_limits(settings, engine) -> RateLimits:
    """The server's limiter: counters in the key database unless ``rate_limit_storage``
    names a ``limits`` storage URI (e.g. ``redis://host:6379/0``)."""
    if settings.rate_limit_storage:
        from limits.storage import storage_from_string

        options = {}
        if settings.rate_limit_storage.startswith(("redis", "rediss", "valkey")):
            # A store that does not answer must not hold requests for long.
            options = {"socket_timeout": 2, "socket_connect_timeout": 2}
        storage = storage_from_string(settings.rate_limit_storage, wrap_exceptions=True, **options)
    else:
        from mlflow_hokusai.store.rate_counters import SqlCounterStorage

        storage = SqlCounterStorage(engine)
    return RateLimits(storage, fail_open=settings.rate_limit_unavailable == "open")
