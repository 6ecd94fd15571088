"""Where a request goes, from its path alone: the URL prefix mapped onto MLflow's root, the
public allowlist and the one redirect the gate makes. Pure functions and one small class;
``tests/test_gate_unit.py`` pins them down without a server."""

from __future__ import annotations

import re
from collections.abc import Callable

import mlflow

from mlflow_hokusai.auth.secret_scanning import MAX_REPORT_BYTES
from mlflow_hokusai.auth.token_exchange import MAX_EXCHANGE_BYTES
from mlflow_hokusai.errors import body_too_large, parts_of

_PUBLIC_EXACT = frozenset({"/health", "/version", "/favicon.ico"})
_PUBLIC_PATTERN = re.compile(
    r"/(?:ajax-)?api/\d+\.\d+/mlflow/server-info|/static-files/[^?]*"
    # keyless CI: the workload's OIDC token is the credential (routes/keyless_ci_api.py)
    r"|/(?:ajax-)?api/2\.0/mlflow/hokusai/token-exchange"
    # leaked keys: GitHub's signature is the credential (routes/secret_scanning_api.py)
    r"|/(?:ajax-)?api/2\.0/mlflow/hokusai/secret-scanning"
)
# Public routes that take a body from anyone, with the most of it the gate lets through
# (bytes): a larger body is refused before it is read.
_PUBLIC_BODY_LIMITS = (
    (re.compile(r"/(?:ajax-)?api/2\.0/mlflow/hokusai/secret-scanning"), MAX_REPORT_BYTES),
    (re.compile(r"/(?:ajax-)?api/2\.0/mlflow/hokusai/token-exchange"), MAX_EXCHANGE_BYTES),
)
_UNCLEAN = re.compile(r"//|/\.\.?(?:/|$)|[%;\\\x00-\x1f]")

Parts = tuple[int, list[tuple[str, str]], bytes]  # (status, headers, body): one response


def _under(path: str, prefix: str) -> bool:
    return bool(prefix) and (path == prefix or path.startswith(prefix + "/"))


def strip_prefix(path: str, prefix: str) -> str:
    """``/api/mlflow/x`` -> ``/x``; paths outside the prefix are returned unchanged."""
    return (path[len(prefix) :] or "/") if _under(path, prefix) else path


def route_prefix(path: str, url_prefix: str, static_prefix: str, native_root=None):
    """The (old, new) leading part to swap to make ``path`` canonical, or None to keep it.

    ``url_prefix`` is an alias of MLflow's root, which is ``static_prefix`` when the operator
    passes ``--static-prefix`` (so ``/api/mlflow/x`` -> ``S/x``); MLflow's own ``S/x`` stays.
    When a path is under both, the longer prefix names it. ``native_root(rest)`` says whether
    MLflow serves ``rest`` natively at the root only (its streaming artifact routes ignore
    ``--static-prefix``): such requests go there instead of to the buffering Flask twin.
    """
    if _under(path, url_prefix) and (
        not _under(path, static_prefix) or len(url_prefix) > len(static_prefix)
    ):
        old, new = url_prefix, static_prefix
    elif _under(path, static_prefix):
        old, new = static_prefix, static_prefix
    else:
        return None
    if static_prefix and native_root is not None and native_root(path[len(old) :]):
        new = ""
    return None if old == new else (old, new)


def swap_prefix(path: str, swap) -> str:
    old, new = swap
    return (new + path[len(old) :]) or "/"


def is_public(path: str, static_prefix: str = "") -> bool:
    """True for the public allowlist only. Paths with dot segments, doubled slashes, encoded
    characters or ``;`` are never public, so no trick can turn a protected path public."""
    if _UNCLEAN.search(path):
        return False
    path = strip_prefix(path, static_prefix)
    return path in _PUBLIC_EXACT or _PUBLIC_PATTERN.fullmatch(path) is not None


def body_limit(path: str, static_prefix: str = "") -> int | None:
    """The most of a request body the public ``path`` may send (None: not limited here)."""
    path = strip_prefix(path, static_prefix)
    return next((size for rule, size in _PUBLIC_BODY_LIMITS if rule.fullmatch(path)), None)


def too_large_answer(limit: int, content_length: list[str]) -> Parts | None:
    """The 413 for a body declared (``Content-Length`` values) larger than ``limit``, else
    None. A body sent without a length is counted as it is read (``gate/asgi.py``)."""
    try:
        declared = max((int(value) for value in content_length), default=0)
    except ValueError:
        return None  # the server itself refuses a malformed length
    return parts_of(body_too_large(limit)) if declared > limit else None


class PathRules:
    """This server's prefixes: ``url_prefix`` (``HOKUSAI_URL_PREFIX``), MLflow's
    ``--static-prefix`` and ``native(path, method)``, which says whether MLflow serves a path
    natively at the root only (``_mlflow.NativeRoutes.match``)."""

    def __init__(self, url_prefix: str, static_prefix: str, native: Callable[[str, str], bool]):
        self.url_prefix = url_prefix
        self.static_prefix = static_prefix
        self.native = native

    def wants_slash(self, seen: str, method: str) -> bool:
        return bool(self.url_prefix) and seen == self.url_prefix and method in ("GET", "HEAD")

    def swap_for(self, seen: str, method: str):
        """``route_prefix`` for this server (native routes ignore ``--static-prefix``)."""
        return route_prefix(
            seen, self.url_prefix, self.static_prefix, lambda rest: self.native(rest, method)
        )

    def canonical(self, path: str, seen: str, method: str):
        """(the canonical path, the swap that made it or None). ``seen``: the path as the
        client sent it (a percent-encoded prefix is not the prefix), ``path`` decoded."""
        swap = self.swap_for(seen, method)
        if swap is None or not _under(path, swap[0]):
            return path, None
        return swap_prefix(path, swap), swap

    def is_public(self, path: str) -> bool:
        return is_public(path, self.static_prefix)

    def body_limit(self, path: str) -> int | None:
        return body_limit(path, self.static_prefix)

    def public_answer(self, path: str, method: str) -> Parts | None:
        """For a public path: the response the gate gives itself, or None to pass it on."""
        if method in ("GET", "HEAD") and strip_prefix(path, self.static_prefix) == "/version":
            # MLflow's auth engine protects /version; the design makes it public, so the
            # gate answers it (the same body MLflow would send).
            body = b"" if method == "HEAD" else mlflow.__version__.encode()
            return 200, [("Content-Type", "text/plain; charset=utf-8")], body
        return None


def swapped(value: str, swap) -> str:
    """A raw request target (path and maybe ``?query``) with ``swap`` applied when it is
    under the swapped prefix, else unchanged."""
    if swap is not None and _under(value.split("?", 1)[0], swap[0]):
        return swap_prefix(value, swap)
    return value


def slash_redirect(path: str, query: str) -> Parts:
    """The UI's index.html loads its assets by relative URLs: ``/api/mlflow`` must become
    ``/api/mlflow/`` in the browser's address bar, or they resolve outside the prefix."""
    location = path + "/" + ("?" + query if query else "")
    return 308, [("Location", location), ("Content-Length", "0")], b""


def not_found_message(
    method: str, path: str, url_prefix: str, static_prefix: str, exists: Callable[[str], bool]
) -> str:
    """The message of the 404 for a ``path`` no route serves: this server's two roots and,
    when dropping a few leading segments after a root finds a route (``exists``, on MLflow's
    canonical paths), the extra part the client's tracking URI probably ends in."""
    roots = list(dict.fromkeys([static_prefix + "/", *([url_prefix + "/"] if url_prefix else [])]))
    shown = path if len(path) <= 200 else path[:200] + "…"
    message = (
        f"No endpoint serves {method} {shown}. This server's API is at "
        + " and at ".join(roots)
        + ": a tracking URI ends at one of them (e.g. http://HOST:PORT"
        + (f" or http://HOST:PORT{url_prefix}" if url_prefix else "")
        + ")."
    )
    extra = _extra_part(path, url_prefix, static_prefix, exists)
    if extra is not None:
        message += f" The tracking URI probably ends in an extra '{extra}': remove it."
    return message


def _extra_part(path, url_prefix, static_prefix, exists, tries: int = 4) -> str | None:
    """The leading part after a root whose removal leaves a served path, or None."""
    for root in (url_prefix, static_prefix):
        if _under(path, root):
            path = path[len(root) :]
            break
    cuts = [i for i, char in enumerate(path) if char == "/" and i > 0][:tries]
    for cut in cuts:
        if exists(static_prefix + path[cut:]):
            return path[:cut]
    return None
