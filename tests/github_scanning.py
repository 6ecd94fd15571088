"""A local "GitHub" for the secret scanning tests: ECDSA P-256 key pairs made with
cryptography, the key set served over HTTP on loopback in GitHub's format
(``{"public_keys": [{"key_identifier", "key", "is_current"}]}``), and reports signed as
GitHub's secret scanning partner program signs them. ``rotate()`` publishes a new current
key under a new id (the old one stays listed, as GitHub does during a rotation)."""

from __future__ import annotations

import base64
import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

KEYS_PATH = "/meta/public_keys/secret_scanning"
TOKEN_TYPE = "hokusai_api_key"


def public_pem(private_key) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def signature(private_key, body: bytes) -> str:
    """GitHub's ``Github-Public-Key-Signature``: base64 of the DER ECDSA P-256 SHA-256
    signature of the raw body."""
    return base64.b64encode(private_key.sign(body, ec.ECDSA(hashes.SHA256()))).decode()


class GitHubScanner:
    def __init__(self):
        scanner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                if self.path != KEYS_PATH:
                    self.send_error(404)
                    return
                scanner.fetches += 1
                data = json.dumps(scanner.key_set()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.keys_url = f"http://127.0.0.1:{self.httpd.server_address[1]}{KEYS_PATH}"
        self.fetches = 0  # GETs of the key set
        self.keys: list[tuple[str, object]] = []  # (key id, private key); the last is current
        self.rotate()
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def rotate(self) -> str:
        """A new current signing key under a new id; returns the id."""
        key_id = secrets.token_hex(32)  # GitHub's ids are 64 hex digits
        self.keys.append((key_id, ec.generate_private_key(ec.SECP256R1())))
        return key_id

    @property
    def current(self) -> tuple[str, object]:
        return self.keys[-1]

    def key_set(self) -> dict:
        return {
            "public_keys": [
                {
                    "key_identifier": key_id,
                    "key": public_pem(key),
                    "is_current": key_id == self.current[0],
                }
                for key_id, key in self.keys
            ]
        }

    def headers(self, body: bytes, key_id: str | None = None, private_key=None) -> dict:
        """The signature headers of ``body``: by the current key unless told otherwise
        (``key_id`` alone: the current key's signature under another id)."""
        current_id, current_key = self.current
        return {
            "Github-Public-Key-Identifier": key_id or current_id,
            "Github-Public-Key-Signature": signature(private_key or current_key, body),
        }

    @staticmethod
    def body(
        *tokens: str, url: str = "https://github.com/octo-org/octo-repo/blob/main/x.py"
    ) -> bytes:
        """A report naming ``tokens``, as GitHub sends it."""
        report = [
            {"token": token, "type": TOKEN_TYPE, "url": url, "source": "content"}
            for token in tokens
        ]
        return json.dumps(report).encode()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
