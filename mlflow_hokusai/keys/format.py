"""The API key format: ``hk_<env>_<random><checksum>``.

Modelled on GitHub's token format: the prefix says what the string is (so secret scanners
and humans recognise it), the random part carries >= 190 bits of entropy, and a CRC32
checksum lets us reject mistyped or made-up keys without touching the database.

Only a SHA-256 digest of a key is ever stored. A slow password hash is unnecessary (and
would cost every request milliseconds): the key is random, not chosen by a human, so the
digest cannot be reversed by guessing.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import zlib
from dataclasses import dataclass

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ENVIRONMENTS = ("live", "test")
RANDOM_LENGTH = 33  # 33 base62 characters = 196 bits
CHECKSUM_LENGTH = 6  # base62 of a CRC32 (< 62**6)
BODY_LENGTH = RANDOM_LENGTH + CHECKSUM_LENGTH
DISPLAY_PREFIX_LENGTH = 12  # "hk_live_" + 4 characters of the random part
MAX_KEY_LENGTH = len("hk_live_") + BODY_LENGTH
_ALPHABET_SET = frozenset(ALPHABET)


class KeyFormatError(ValueError):
    """The string is not a well-formed API key (wrong shape or checksum)."""


@dataclass(frozen=True)
class ParsedKey:
    key: str
    environment: str

    @property
    def digest(self) -> str:
        return digest(self.key)

    @property
    def display_prefix(self) -> str:
        return self.key[:DISPLAY_PREFIX_LENGTH]


def _base62(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, rem = divmod(number, 62)
        chars.append(ALPHABET[rem])
    return "".join(reversed(chars))


def _checksum(head: str) -> str:
    return _base62(zlib.crc32(head.encode("ascii")), CHECKSUM_LENGTH)


def generate_key(environment: str = "live") -> str:
    """Return a new random key for ``environment`` (``live`` or ``test``)."""
    if environment not in ENVIRONMENTS:
        raise ValueError(f"key environment must be one of {ENVIRONMENTS}, not {environment!r}")
    random_part = "".join(secrets.choice(ALPHABET) for _ in range(RANDOM_LENGTH))
    head = f"hk_{environment}_{random_part}"
    return head + _checksum(head)


def looks_like_key(value: str) -> bool:
    """True when ``value`` claims to be a Hokusai key (it may still be malformed)."""
    return value.startswith("hk_")


def parse_key(value: str) -> ParsedKey:
    """Validate shape and checksum; raise KeyFormatError with a short reason otherwise."""
    if not isinstance(value, str) or len(value) != MAX_KEY_LENGTH:
        raise KeyFormatError("the API key has the wrong length")
    parts = value.split("_", 2)
    if len(parts) != 3 or parts[0] != "hk":
        raise KeyFormatError("the API key does not start with 'hk_'")
    environment, body = parts[1], parts[2]
    if environment not in ENVIRONMENTS:
        raise KeyFormatError("the API key has an unknown environment prefix")
    if len(body) != BODY_LENGTH or not _ALPHABET_SET.issuperset(body):
        raise KeyFormatError("the API key contains invalid characters")
    head, check = value[:-CHECKSUM_LENGTH], value[-CHECKSUM_LENGTH:]
    if not secrets.compare_digest(_checksum(head), check):
        raise KeyFormatError("the API key's checksum does not match (mistyped or truncated?)")
    return ParsedKey(key=value, environment=environment)


def digest(key: str) -> str:
    """SHA-256 hex digest: what the database stores and is searched by."""
    return hashlib.sha256(key.encode("ascii")).hexdigest()


# What a secret scanner looks for (GitHub's partner program; docs/key-management.md): the
# prefix, an environment and a body of the right length and alphabet, as a whole word. The
# checksum is beyond a regular expression: the server checks it when a match is reported.
SCANNER_PATTERN = rf"\bhk_(?:{'|'.join(ENVIRONMENTS)})_[0-9A-Za-z]{{{BODY_LENGTH}}}\b"

# Anything shaped like one of our keys (checksum or not: a mistyped key is still a secret).
_KEY_LIKE = re.compile(r"hk_(live|test)_[0-9A-Za-z]{8,}")


def redact(text: str) -> str:
    """``text`` with every key-shaped string replaced by ``hk_<env>_[REDACTED]``."""
    return _KEY_LIKE.sub(r"hk_\1_[REDACTED]", text)
