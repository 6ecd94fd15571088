"""A webhook receiver on loopback for the key webhook tests: an ``http.server`` in a thread
that checks every request's signature the way MLflow's webhook documentation tells
receivers to (``verify_mlflow_signature``: written from the documented algorithm, not from
our code), and keeps what it got."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.server import free_port

MAX_TIMESTAMP_AGE = 300  # seconds, as MLflow's documentation suggests


def verify_mlflow_signature(
    payload: str, signature: str, secret: str, delivery_id: str, timestamp: str
) -> bool:
    """MLflow's documented check: ``v1,`` then the base64 HMAC-SHA256 of
    ``"{delivery_id}.{timestamp}.{payload}"`` under the shared secret, compared in constant
    time; a timestamp more than 5 minutes off is refused (replays)."""
    if not signature or not signature.startswith("v1,"):
        return False
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > MAX_TIMESTAMP_AGE:
        return False
    signed_content = f"{delivery_id}.{timestamp}.{payload}"
    expected = base64.b64encode(
        hmac.new(secret.encode("utf-8"), signed_content.encode("utf-8"), hashlib.sha256).digest()
    ).decode("utf-8")
    return hmac.compare_digest(signature.removeprefix("v1,"), expected)


@dataclass(frozen=True)
class Delivery:
    headers: dict
    body: str
    valid: bool  # the signature checked out

    @property
    def payload(self) -> dict:
        return json.loads(self.body)

    @property
    def delivery_id(self) -> str:
        return self.headers["X-MLflow-Delivery-Id"]


class Receiver:
    """``start()`` listens on ``port`` (a free one unless given: give one to start later);
    every POST is kept in ``deliveries``; it answers ``status`` after ``delay`` seconds."""

    def __init__(self, secret: str, port: int | None = None, *, delay=0.0, status=200):
        self.secret = secret
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/hooks/keys"
        self.delay, self.status = delay, status
        self.deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                headers = dict(self.headers.items())
                valid = verify_mlflow_signature(
                    body,
                    headers.get("X-MLflow-Signature", ""),
                    receiver.secret,
                    headers.get("X-MLflow-Delivery-Id", ""),
                    headers.get("X-MLflow-Timestamp", ""),
                )
                time.sleep(receiver.delay)
                with receiver._lock:
                    receiver.deliveries.append(Delivery(headers, body, valid))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def got(self, event: str | None = None) -> list[Delivery]:
        with self._lock:
            return [d for d in self.deliveries if event is None or d.payload["event"] == event]

    def wait_for(self, count: int, event: str | None = None, timeout: float = 120.0):
        """Poll until at least ``count`` deliveries (of ``event``) arrived; return them."""
        deadline = time.monotonic() + timeout
        while len(self.got(event)) < count:
            if time.monotonic() > deadline:
                got = [(d.payload["event"], d.payload["data"].get("key_id")) for d in self.got()]
                raise AssertionError(f"{count} {event or 'event'}(s) expected, got {got}")
            time.sleep(0.2)
        return self.got(event)
