"""Keys never reach the server's logs: a key sent by mistake in a URL (``?api_key=hk_live_…``,
also percent-encoded) is refused by the gate, and the access log line that records the
request shows it redacted.

The sign-in callback's ``code`` and ``state`` (single-use, but secrets while they last) are
shown as ``[redacted]`` too.

A ``logging.Filter`` on the access loggers of uvicorn and gunicorn rewrites the record's
arguments (the request line) before any handler formats them.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote

from mlflow_hokusai.keys.format import redact as redact_plain

ACCESS_LOGGERS = ("uvicorn.access", "gunicorn.access", "waitress")
_CALLBACK_SECRETS = re.compile(r"([?&](?:code|state)=)[^&\s\"]+")


def _without_callback_secrets(text: str) -> str:
    return _CALLBACK_SECRETS.sub(r"\1[redacted]", text)


def redact(text: str) -> str:
    """``text`` with every key redacted, also a percent-encoded one (``hk%5Flive%5F…``,
    ``hk_live_%43…``, encoded twice): a line holding one is logged decoded, then redacted."""
    if "/hokusai/auth/callback?" in text:
        text = _without_callback_secrets(text)
    redacted = redact_plain(text)
    decoded = text
    for _ in range(3):  # %255F -> %5F -> _
        if "%" not in decoded:
            break
        decoded = unquote(decoded)
        if redact_plain(decoded) != decoded:
            return redact_plain(decoded)
    return redacted


def _redacted(value):
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, tuple):
        return tuple(_redacted(v) for v in value)
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    return value


class RedactKeys(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if record.args:
            record.args = _redacted(record.args)
        return True


def install() -> None:
    for name in ACCESS_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactKeys) for f in logger.filters):
            logger.addFilter(RedactKeys())
