"""The key event sender: one thread per server process, of which only the holder of the
``key-webhooks`` lease (``store/leases.py``) works — one sender across all workers and
replicas sharing the key database. Requests never wait for it: they only insert outbox rows.

Each pass (every second) the holder renews its lease, looks for due notices every
``key_webhook_check_interval`` (``keys/notices.py``), and sends pending events oldest first
to every receiver. Before each POST it counts the attempt on the row, and only while it still
holds the lease (``WebhookStore.claim``); after a 2xx it marks the receiver delivered. A
receiver that fails (no answer, or anything but 2xx) is retried with exponential backoff
(1 s, 2 s, 4 s … up to ``key_webhook_max_backoff``), the same event first, so events reach
each receiver in order; an event still failing after ``key_webhook_retry_for`` is given up
(logged, and recorded on the row).

The guarantee is at least once, with the delivery id for receivers to dedupe: a clean stop
(SIGTERM) lets the POST under way finish and be marked before the thread ends — ``stop`` is
called at the ASGI lifespan's shutdown under uvicorn (which then ends its process with the
signal), and elsewhere the thread, not a daemon, ends once the main thread has — then
releases the lease so another process takes over at once. Only a process killed between a
receiver's 2xx and the commit of "delivered" (a few milliseconds), or a lease lost during a
POST slower than the lease's 20 s margin, can send an event twice — with the same delivery
id.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from datetime import timedelta

import requests
from sqlalchemy.engine import Engine

from mlflow_hokusai.keys.notices import KeyNotices
from mlflow_hokusai.keys.webhooks import Answer, post, receiver_id, shown_url
from mlflow_hokusai.store.clock import utcnow
from mlflow_hokusai.store.leases import LeaseStore
from mlflow_hokusai.store.webhooks import Pending, WebhookStore

_logger = logging.getLogger(__name__)
LEASE = "key-webhooks"
LEASE_SECONDS = 30.0
RENEW_AFTER = 10.0  # a holder renews this often, so a POST has 20 s before the lease could lapse
POLL_SECONDS = 1.0  # the holder looks for new events this often
STANDBY_SECONDS = 2.0  # the others try to take the lease this often
BATCH = 100
ERROR_LOG_INTERVAL = 60.0


class WebhookSender:
    def __init__(
        self,
        engine: Engine,
        urls: tuple[str, ...],
        secret: str,
        notices: KeyNotices | None = None,
        *,
        max_backoff: float = 600.0,
        retry_for: float = 3 * 86400.0,
        check_interval: float = 900.0,
        holder: str | None = None,
    ):
        self.store = WebhookStore(engine)
        self.leases = LeaseStore(engine)
        self.receivers = {receiver_id(url): url for url in urls}
        self.secret = secret
        self.notices = notices
        self.max_backoff, self.retry_for = max_backoff, retry_for
        self.check_interval = check_interval
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.session = requests.Session()
        self._backoff: dict[str, tuple[int, float]] = {}  # receiver -> (failures, retry at)
        self._renewed: float | None = None  # when the lease was last taken or renewed
        self._holding = False
        self._next_check = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error_logged = -ERROR_LOG_INTERVAL

    # -- the thread ---------------------------------------------------------------------------
    def start(self) -> WebhookSender:
        """Start the sender's thread. Not a daemon: at exit, the interpreter waits for it to
        finish the POST under way (it stops once the main thread has)."""
        self._thread = threading.Thread(target=self._run, name="hokusai-webhooks", daemon=False)
        self._thread.start()
        return self

    def stop(self, timeout: float = 20.0) -> None:
        """Stop after the POST under way (at most its 15 s timeout) and release the lease."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _running(self) -> bool:
        return not self._stop.is_set() and threading.main_thread().is_alive()

    def _run(self) -> None:
        while self._running():
            holding = False
            try:
                holding = self.run_once()
            except Exception:  # the database is down, say: try again, say so once a minute
                if time.monotonic() - self._error_logged >= ERROR_LOG_INTERVAL:
                    self._error_logged = time.monotonic()
                    _logger.warning("Key webhooks: a pass of the sender failed", exc_info=True)
            deadline = time.monotonic() + (POLL_SECONDS if holding else STANDBY_SECONDS)
            while self._running() and time.monotonic() < deadline:
                time.sleep(0.1)
        self.release()

    def release(self) -> None:
        """Let another process take over at once (on a clean stop)."""
        self._renewed = None
        try:
            self.leases.release(LEASE, self.holder)
        except Exception:
            _logger.warning("Key webhooks: could not release the sender's lease", exc_info=True)

    # -- one pass -----------------------------------------------------------------------------
    def run_once(self) -> bool:
        """One pass: hold the lease, then notices (when due) and pending events. Returns
        whether this process holds the lease."""
        if not self._hold():
            return False
        if self.notices is not None and time.monotonic() >= self._next_check:
            self._next_check = time.monotonic() + self.check_interval
            made = self.notices.check()
            if made:
                _logger.info("Key webhooks: %d notice(s) about expiring or dormant keys", made)
        self.deliver_pending()
        return True

    def _hold(self) -> bool:
        now = time.monotonic()
        if self._renewed is not None and now - self._renewed < RENEW_AFTER:
            return True
        if self.leases.take(LEASE, self.holder, LEASE_SECONDS):
            if not self._holding:
                _logger.info("Key webhooks: this process (%s) sends key events", self.holder)
            self._renewed, self._holding = now, True
            return True
        self._renewed, self._holding = None, False
        return False

    def deliver_pending(self) -> int:
        """Send pending events, oldest first, to the receivers not backing off; returns how
        many deliveries succeeded."""
        delivered = 0
        for row in self.store.pending(BATCH):
            if all(self._waiting(r) for r in self.receivers) or not self._running():
                break
            if not self._hold():
                break
            delivered += self._deliver(row)
        return delivered

    def _deliver(self, row: Pending) -> int:
        everyone = set(self.receivers)
        if everyone <= set(row.results):  # receivers removed since: nothing left to send
            self.store.record(row.id, {}, everyone)
            return 0
        delivered = 0
        for receiver in everyone - set(row.results):
            if self._waiting(receiver):
                continue
            results = self.store.claim(row.id, LEASE, self.holder)
            if results is None:  # the lease was lost, or another sender finished the row
                self._renewed = None
                return delivered
            if receiver not in results:
                answer = post(self.session, self.receivers[receiver], self.secret, row)
                delivered += self._settle(row, receiver, answer)
        return delivered

    def _settle(self, row: Pending, receiver: str, answer: Answer) -> int:
        """Record ``receiver``'s ``answer`` to ``row``: delivered, retried later, or (too
        old) given up."""
        url = shown_url(self.receivers[receiver])
        everyone = set(self.receivers)
        if answer.ok:
            if self._backoff.pop(receiver, None) is not None:
                _logger.info("Key webhooks: %s answers again", url)
            self.store.record(row.id, {receiver: "delivered"}, everyone)
            return 1
        wait = self._failed(receiver)
        error = f"{url}: {answer}"
        if utcnow() - row.created_at >= timedelta(seconds=self.retry_for):
            self.store.record(row.id, {receiver: f"failed: {answer}"}, everyone, error=error)
            _logger.warning(
                "Key webhooks: gave up %s event %s to %s after %d attempts (%s)",
                row.event,
                row.delivery_id,
                url,
                row.attempts + 1,
                answer,
            )
            return 0
        self.store.record(row.id, {}, everyone, error=error)
        failures = self._backoff[receiver][0]
        if failures & (failures - 1) == 0:  # the 1st, 2nd, 4th, 8th … failure in a row
            _logger.warning(
                "Key webhooks: %s failed (%s); retrying in %d s", url, answer, round(wait)
            )
        return 0

    def _failed(self, receiver: str) -> float:
        failures = self._backoff.get(receiver, (0, 0.0))[0] + 1
        wait = min(self.max_backoff, 2.0 ** min(failures - 1, 30))
        self._backoff[receiver] = (failures, time.monotonic() + wait)
        return wait

    def _waiting(self, receiver: str) -> bool:
        entry = self._backoff.get(receiver)
        return entry is not None and time.monotonic() < entry[1]
