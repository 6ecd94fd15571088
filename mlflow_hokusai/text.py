"""Text that reaches a person's terminal: which characters may not be in names we store, and
how table output shows the ones that are in data we did not write (request paths, old names).

Control characters (C0 and C1, so ESC and CSI sequences), format characters (bidi overrides
such as U+202E, zero-width characters), line/paragraph separators and the other code points
Unicode says are "default ignorable" (they render as nothing: U+034F, the Hangul fillers U+115F
and U+3164, variation selectors …) can make a table print something other than what is stored,
or two names look the same. Names refuse them; table cells show them escaped
(``\\x1b``, ``\\u202e``). JSON output stays exact: JSON escapes them itself.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable

_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})
# Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt) beyond the categories
# above: a stable property, which Python's unicodedata does not expose.
_IGNORABLE_RANGES = (
    (0x034F, 0x034F),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)


def is_unsafe(char: str) -> bool:
    if unicodedata.category(char) in _UNSAFE_CATEGORIES:
        return True
    code = ord(char)
    return code >= 0x034F and any(low <= code <= high for low, high in _IGNORABLE_RANGES)


def has_unsafe_chars(value: str) -> bool:
    return any(is_unsafe(c) for c in value)


def printable(value: str) -> str:
    """``value`` with every unsafe character written as a Python escape (and backslashes
    doubled, so an escape in the data cannot pass for one of ours)."""
    out = []
    for char in value:
        if char == "\\":
            out.append("\\\\")
        elif is_unsafe(char):
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


# -- names we store ---------------------------------------------------------------------------
# Names Hokusai stores itself (key names, usernames, policy audiences): its columns are
# String(255), as are MLflow's user names.
MAX_NAME_LENGTH = 255
# Names of MLflow's own resources (experiments, registered models), which resource limits name:
# MLflow stores them in String(256) columns, and limits stored with a 256-character name are
# read back on every request.
MLFLOW_NAME_LENGTH = 256


def check_name(
    value,
    longest: int = MAX_NAME_LENGTH,
    *,
    empty: str,
    too_long: str,
    not_text: str | None = None,
    strip: bool = True,
    error: Callable[[str], Exception] = ValueError,
) -> str:
    """``value`` if it is a non-empty string of at most ``longest`` characters with no unsafe
    character. Else ``error(message)`` is raised (the caller's own error: its 400), with the
    caller's message: ``not_text`` (default ``empty``) for a value that is not a string,
    ``empty`` for a blank one, ``too_long`` for one too long or with an unsafe character.
    ``strip``: surrounding white space is dropped first (without it, only a blank value counts
    as empty, and the value is measured and returned as given)."""
    if not isinstance(value, str):
        raise error(empty if not_text is None else not_text)
    if not value.strip():
        raise error(empty)
    if strip:
        value = value.strip()
    if len(value) > longest or has_unsafe_chars(value):
        raise error(too_long)
    return value
