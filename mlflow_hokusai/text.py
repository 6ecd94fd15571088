"""Text that reaches a person's terminal: which characters may not be in names we store, and
how table output shows the ones that are in data we did not write (request paths, old names).

Control characters (C0 and C1, so ESC and CSI sequences), format characters (bidi overrides
such as U+202E, zero-width characters) and line/paragraph separators can make a table print
something other than what is stored. Names refuse them; table cells show them escaped
(``\\x1b``, ``\\u202e``). JSON output stays exact: JSON escapes them itself.
"""

from __future__ import annotations

import unicodedata

_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})


def is_unsafe(char: str) -> bool:
    return unicodedata.category(char) in _UNSAFE_CATEGORIES


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
