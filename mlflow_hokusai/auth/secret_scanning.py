"""Leaked keys: reports from GitHub's secret scanning partner program revoke them at once
(``POST /api/2.0/mlflow/hokusai/secret-scanning``).

GitHub finds strings shaped like our keys (``keys/format.py``: prefix, random part, checksum)
in public code and POSTs them here, a JSON list of ``{"token", "type", "url", "source"}``,
signed: ``Github-Public-Key-Signature`` is a base64 DER ECDSA P-256 / SHA-256 signature of the
raw body by the key that ``Github-Public-Key-Identifier`` names, one of those published at
``secret_scanning_keys_url``. The endpoint needs no API key (the signature is the credential);
it is limited per client address like the token exchange (``secret_scanning_limit``, counted in
the rate-limit store).

- The key set is cached an hour per worker; a report signed by a key id it does not hold makes
  the worker fetch it again, at most once a minute (so GitHub's key rotation is picked up
  without a restart, and made-up key ids cannot make us hammer the publisher). A fetch that
  fails leaves the cached keys in use; with no key to check the report by, the answer is 503
  and nothing changes.
- Each reported token that is a key of ours and still works is revoked
  (``KeyManager.revoke_leaked``: audited as ``revoked``, ``leaked: <url>``).
- The answer is GitHub's token analysis: ``true_positive`` for a key this report revoked,
  ``false_positive`` for everything else (not our format, no such key, already revoked,
  expired or rotated out), and nothing more (no owner, no key id).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import threading
import time
from collections.abc import Callable

import requests

from mlflow_hokusai.config import DEFAULT_SECRET_SCANNING_LIMIT
from mlflow_hokusai.errors import (
    SCANNER_KEYS_DOWN,
    HokusaiError,
    Unavailable,
    body_too_large,
    invalid_parameter,
)
from mlflow_hokusai.keys.management import KeyManager
from mlflow_hokusai.text import printable

_logger = logging.getLogger(__name__)
MAX_REPORT_BYTES = 1024 * 1024  # the largest report body read (GitHub's are a few KiB)
KEY_ID_HEADER = "Github-Public-Key-Identifier"
SIGNATURE_HEADER = "Github-Public-Key-Signature"
MAX_HEADER_LENGTH = 1024  # a key id is 64 hex digits, a signature about 96 characters
KEYS_TTL_SECONDS = 60 * 60.0
REFETCH_INTERVAL_SECONDS = 60.0
RETRY_AFTER_FAILURE_SECONDS = 5.0  # no new fetch this soon after one failed
FETCH_TIMEOUT_SECONDS = 5.0
REPORT_FIELDS = ("token", "type", "url", "source")


class ReportRejected(Exception):
    """The report's signature does not check out (a 401, nothing changed)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class KeysUnreachable(Exception):
    """The key set could not be fetched (a 503, not the report's fault)."""


def parse_key_set(data) -> dict:
    """GitHub's key set, ``{"public_keys": [{"key_identifier", "key" (PEM), "is_current"}]}``
    -> {key id: ECDSA P-256 public key}. Keys of other types are left out; raises ValueError
    when the document is not a key set."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    entries = data.get("public_keys") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ValueError("the answer has no 'public_keys' list")
    keys = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        key_id, pem = entry.get("key_identifier"), entry.get("key")
        if not isinstance(key_id, str) or not isinstance(pem, str):
            continue
        try:
            key = serialization.load_pem_public_key(pem.encode())
        except (ValueError, TypeError):
            continue
        if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1":
            keys[key_id] = key
    return keys


def fetch_key_set(url: str) -> dict:
    """The key set published at ``url``; raises ``requests.RequestException`` or ValueError."""
    response = requests.get(
        url,
        timeout=FETCH_TIMEOUT_SECONDS,
        allow_redirects=False,
        headers={"Accept": "application/json"},
    )
    response.raise_for_status()
    if response.status_code != 200:  # e.g. a redirect, which is not followed
        raise ValueError(f"{url} answered {response.status_code}")
    return parse_key_set(response.json())


class ScannerKeys:
    """The reports' signing keys, as published at ``url``, cached (per worker)."""

    def __init__(self, url: str, *, fetch: Callable[[str], dict] = fetch_key_set, clock=None):
        self.url = url
        self._fetch = fetch
        self._clock = clock or time.monotonic
        self._keys: dict = {}
        self._fetched = -math.inf  # when the keys were fetched
        self._refetched = -math.inf  # ... last fetched for a key id they did not have
        self._retry_at = -math.inf  # no fetch before this, after one failed
        self._lock = threading.Lock()

    def key(self, key_id: str):
        """The public key ``key_id`` names. Raises ``ReportRejected`` (not published) or
        ``KeysUnreachable``. One fetch at a time: the others wait for it."""
        with self._lock:
            now = self._clock()
            if now - self._fetched > KEYS_TTL_SECONDS:
                self._load(now, stale_ok=key_id in self._keys)
            elif key_id not in self._keys and now - self._refetched >= REFETCH_INTERVAL_SECONDS:
                self._refetched = now
                self._load(now, stale_ok=False)
            key = self._keys.get(key_id)
        if key is None:
            raise ReportRejected(
                f"the report is signed with key {printable(key_id[:100])!r}, which "
                f"{self.url} does not publish"
            )
        return key

    def _load(self, now: float, *, stale_ok: bool) -> None:
        """Fetch the key set; on failure keep the cached keys when ``stale_ok``, else raise
        ``KeysUnreachable``."""
        if now >= self._retry_at:
            try:
                self._keys, self._fetched = self._fetch(self.url), now
                return
            except (requests.RequestException, ValueError) as error:
                self._retry_at = now + RETRY_AFTER_FAILURE_SECONDS
                _logger.warning(
                    "could not fetch the secret scanning keys at %s: %s", self.url, error
                )
        if not stale_ok:
            raise KeysUnreachable(self.url)


def verify_signature(public_key, body: bytes, signature: str) -> None:
    """Raise ``ReportRejected`` unless ``signature`` (base64 DER) is ``public_key``'s ECDSA
    P-256 SHA-256 signature of ``body``."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        der = base64.b64decode(signature.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ReportRejected(f"the {SIGNATURE_HEADER} header is not base64") from None
    try:
        public_key.verify(der, body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        raise ReportRejected(
            "the signature does not verify: the body is not what the key signed"
        ) from None


def parse_report(body: bytes) -> list[dict]:
    """The reported tokens: a JSON list of objects whose ``token``, ``type``, ``url`` and
    ``source`` are strings (other fields are ignored). Raises a 400 naming the rule."""
    try:
        report = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise invalid_parameter("The report is not valid JSON.") from None
    if not isinstance(report, list):
        raise invalid_parameter(
            "The report must be a JSON list of {token, type, url, source} objects."
        )
    for number, item in enumerate(report):
        if not isinstance(item, dict):
            raise invalid_parameter(f"Report entry {number} must be a JSON object.")
        for name in REPORT_FIELDS:
            if not isinstance(item.get(name), str):
                raise invalid_parameter(f"Report entry {number} needs a string {name!r}.")
    return report


class SecretScanning:
    def __init__(
        self,
        keys: ScannerKeys,
        manager: KeyManager,
        rate_limits,
        limit: str = DEFAULT_SECRET_SCANNING_LIMIT,
    ):
        self.keys = keys
        self.manager = manager
        self.rate_limits = rate_limits
        self.limit = limit

    def throttle(self, source: str | None) -> None:
        """Count one report from ``source``; a 429 over ``secret_scanning_limit``."""
        verdict = self.rate_limits.check(f"secret-scanning:{source or '-'}", self.limit)
        if verdict is not None and not verdict.allowed:
            raise HokusaiError(
                "REQUEST_LIMIT_EXCEEDED",
                f"Too many secret scanning reports from this address (at most {self.limit}); "
                f"retry in {verdict.reset} s.",
                retry_after=verdict.reset,
            )

    def report(self, body: bytes, key_id, signature, source: str | None) -> list[dict]:
        """GitHub's token analysis of a report (``body``, as read: at most one byte over
        ``MAX_REPORT_BYTES``) signed by ``key_id`` with ``signature`` (the headers' values,
        None when absent), after revoking what it names. Raises ``HokusaiError``: 400 missing
        header or malformed report, 401 signature, 413 too large, 503 key set unreachable."""
        for name, value in ((KEY_ID_HEADER, key_id), (SIGNATURE_HEADER, signature)):
            if not value or not value.strip():
                raise HokusaiError(
                    "BAD_REQUEST", f"The {name} header is required: reports must be signed."
                )
            if len(value) > MAX_HEADER_LENGTH:
                raise HokusaiError(
                    "BAD_REQUEST", f"The {name} header is longer than {MAX_HEADER_LENGTH} bytes."
                )
        if len(body) > MAX_REPORT_BYTES:
            raise too_large()
        self._verify(body, key_id.strip(), signature.strip(), source)
        return self._analysed(parse_report(body), source)

    def _verify(self, body: bytes, key_id: str, signature: str, source: str | None) -> None:
        try:
            verify_signature(self.keys.key(key_id), body, signature)
        except ReportRejected as rejected:
            _logger.info("secret scanning report from %s refused: %s", source, rejected.reason)
            raise HokusaiError(
                "UNAUTHENTICATED", f"Secret scanning report refused: {rejected.reason}."
            ) from None
        except KeysUnreachable:
            raise Unavailable(SCANNER_KEYS_DOWN) from None

    def _analysed(self, report: list[dict], source: str | None) -> list[dict]:
        labels: dict[str, str] = {}  # a token named twice is judged once
        for item in report:
            token = item["token"]
            if token not in labels:
                revoked = self.manager.revoke_leaked(token, url=item["url"], source=source)
                labels[token] = "false_positive" if revoked is None else "true_positive"
                if revoked is not None:
                    _logger.warning(
                        "API key %s (%s…) of %s revoked: reported leaked at %s",
                        revoked.id,
                        revoked.display_prefix,
                        revoked.username,
                        printable(item["url"][:400]),
                    )
        return [
            {"token_raw": item["token"], "token_type": item["type"], "label": labels[item["token"]]}
            for item in report
        ]


def too_large() -> HokusaiError:
    return body_too_large(MAX_REPORT_BYTES)
