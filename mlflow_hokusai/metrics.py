"""Authentication counters on MLflow's ``/metrics``, when ``mlflow server --expose-prometheus
DIR`` is on (install ``mlflow-hokusai[metrics]``). ``prometheus_client`` in multiprocess mode
(the directory MLflow passes its workers), so every worker's counts add up:

- ``hokusai_auth_requests_total{outcome}``: ok, unauthenticated, forbidden_scope (a read-only
  key refused a write, or a resource-limited key a route or workspace), forbidden_ip (a key
  used from outside its allowlist), rate_limited, unavailable (the key database unreachable: 503);
- ``hokusai_key_lookups_total{result}``: ``cache_hit`` or ``lookup`` (a database query);
- ``hokusai_api_keys{status}``: keys by status (active, rotating, dormant, expired, revoked),
  refreshed every minute.

Labels never carry a key, a digest or a user name. Without ``--expose-prometheus`` (or without
``prometheus_client``) every call here does nothing.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

_logger = logging.getLogger(__name__)
OUTCOMES = (
    "ok",
    "unauthenticated",
    "forbidden_scope",
    "forbidden_ip",
    "rate_limited",
    "unavailable",
)
KEY_STATUSES = ("active", "rotating", "dormant", "expired", "revoked")
REFRESH_SECONDS = 60.0


def enabled_by_environment(environ=os.environ) -> bool:
    """MLflow sets ``prometheus_multiproc_dir`` for its workers under --expose-prometheus."""
    return bool(environ.get("PROMETHEUS_MULTIPROC_DIR") or environ.get("prometheus_multiproc_dir"))


class AuthMetrics:
    def __init__(self, enabled: bool = False):
        self.enabled = False
        if not enabled:
            return
        try:
            from prometheus_client import Counter, Gauge
        except ImportError:
            _logger.warning(
                "--expose-prometheus is on but prometheus_client is missing: install "
                "mlflow-hokusai[metrics] for the hokusai_* metrics"
            )
            return
        self._requests = Counter(
            "hokusai_auth_requests", "Requests by authentication outcome", ["outcome"]
        )
        self._lookups = Counter(
            "hokusai_key_lookups", "API key checks: cache hits and database lookups", ["result"]
        )
        self._keys = Gauge(
            "hokusai_api_keys", "API keys by status", ["status"], multiprocess_mode="livemax"
        )
        for outcome in OUTCOMES:  # every series exists from the start, at 0
            self._requests.labels(outcome)
        for result in ("cache_hit", "lookup"):
            self._lookups.labels(result)
        self.enabled = True

    def request(self, outcome: str) -> None:
        if self.enabled:
            self._requests.labels(outcome).inc()

    def key_lookup(self, cache_hit: bool) -> None:
        if self.enabled:
            self._lookups.labels("cache_hit" if cache_hit else "lookup").inc()

    def watch_keys(self, count: Callable[[], dict], every: float = REFRESH_SECONDS) -> None:
        """Set ``hokusai_api_keys`` from ``count()`` (status -> number) now and every
        ``every`` seconds, in a daemon thread."""
        if not self.enabled:
            return

        def refresh():
            while True:
                try:
                    counts = count()
                    for status in KEY_STATUSES:
                        self._keys.labels(status).set(counts.get(status, 0))
                except Exception:  # a database outage must not kill the thread
                    _logger.warning("could not count API keys for /metrics", exc_info=True)
                stop.wait(every)

        stop = threading.Event()
        threading.Thread(target=refresh, name="hokusai-key-metrics", daemon=True).start()
