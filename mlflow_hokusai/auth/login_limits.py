"""Failed password logins are limited per source address and per user name.

MLflow passwords are chosen by people, so guessing them is the attack keys do not have. After
``limit`` failed logins (default 10 a minute, a moving window) from one address or for one
user name, password logins from that address or for that name get ``429`` with
``Retry-After`` until the window frees up; key logins are not affected. Counted per worker
process (the ``limits`` library, in memory): with W workers an attacker gets at most W times
the limit, and every worker refuses on its own.
"""

from __future__ import annotations

import math
import time

from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

DEFAULT_LIMIT = "10/minute"


class LoginLimits:
    def __init__(self, limit: str = DEFAULT_LIMIT):
        self.item = parse(limit)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def _subjects(self, address: str | None, username: str):
        yield "user", username
        if address:
            yield "address", address

    def retry_after(self, address: str | None, username: str) -> int | None:
        """Seconds to wait when logins from ``address`` or for ``username`` are limited now,
        else None. Never blocks."""
        for kind, subject in self._subjects(address, username):
            if not self._limiter.test(self.item, kind, subject):
                reset = self._limiter.get_window_stats(self.item, kind, subject).reset_time
                return max(1, math.ceil(reset - time.time()))
        return None

    def failed(self, address: str | None, username: str) -> None:
        for kind, subject in self._subjects(address, username):
            self._limiter.hit(self.item, kind, subject)
