"""The outer gate, wrapped around the whole app (ASGI under uvicorn, WSGI otherwise).

It does two things before any MLflow code runs:

1. maps ``HOKUSAI_URL_PREFIX`` (default ``/api/mlflow``) onto MLflow's root (``/``, or the
   ``--static-prefix``), so every route exists at both places and all later code, authorization
   included, sees only the canonical path (see ``route_prefix``);
2. authenticates every request except the public allowlist (health, version, server-info,
   static UI assets). MLflow's auth engine then authorizes; the gate makes sure FastAPI-native
   routes without an MLflow validator cannot be reached anonymously either.
"""

from __future__ import annotations

import re
from http import HTTPStatus

import anyio
import mlflow

from mlflow_hokusai import _mlflow
from mlflow_hokusai.auth.credentials import from_headers
from mlflow_hokusai.auth.scopes import ReadScope
from mlflow_hokusai.errors import HokusaiError, error_parts
from mlflow_hokusai.keys.service import AuthFailure, KeyService

_PUBLIC_EXACT = frozenset({"/health", "/version", "/favicon.ico"})
_PUBLIC_PATTERN = re.compile(r"/(?:ajax-)?api/\d+\.\d+/mlflow/server-info|/static-files/[^?]*")
_UNCLEAN = re.compile(r"//|/\.\.?(?:/|$)|[%;\\\x00-\x1f]")


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


NEEDS_LOOKUP = object()  # check(cached_only=True): the answer needs database I/O


class _Gate:
    def __init__(self, app, service: KeyService, url_prefix: str, static_prefix: str,
                 read_scope: ReadScope | None = None, audit=None):
        self.app = app
        self.service = service
        self.url_prefix = url_prefix
        self.static_prefix = static_prefix
        # Without a route table every request of a read-only key is refused (fail closed).
        self.read_scope = read_scope or ReadScope()
        self.audit = audit  # keys.audit.AuditLog: refused uses of known keys

    def wants_slash(self, seen: str, method: str) -> bool:
        return bool(self.url_prefix) and seen == self.url_prefix and method in ("GET", "HEAD")

    def check(self, path: str, method: str, get_all, peer: str | None = None,
              cached_only: bool = False):
        """None when the request may go on, else a response (status, headers, body).
        With ``cached_only``: NEEDS_LOOKUP when answering needs database I/O (a key not in the
        cache, or an audit event to write)."""
        if is_public(path, self.static_prefix):
            if method in ("GET", "HEAD") and strip_prefix(path, self.static_prefix) == "/version":
                # MLflow's auth engine protects /version; the design makes it public, so the
                # gate answers it (the same body MLflow would send).
                body = b"" if method == "HEAD" else mlflow.__version__.encode()
                return 200, [("Content-Type", "text/plain; charset=utf-8")], body
            return None
        try:
            result = self.service.resolve(from_headers(get_all), cached_only=cached_only)
        except HokusaiError as error:  # the key database is unreachable: 503, fail closed
            return error_parts(error.error_code, error.message, error.status)
        if result is None:
            return NEEDS_LOOKUP
        if isinstance(result, AuthFailure):
            if cached_only and self.audit is not None:
                return NEEDS_LOOKUP
            if self.audit is not None:
                self.audit.failed_key(result, peer)
            return error_parts("UNAUTHENTICATED", result.message)
        refusal = self.read_scope.refusal(result, path, method)
        if refusal is not None:
            if cached_only and self.audit is not None:
                return NEEDS_LOOKUP
            if self.audit is not None:
                self.audit.read_only_refusal(result, f"{method} {path}", peer)
            return error_parts("PERMISSION_DENIED", refusal)
        return None


class AsgiGate(_Gate):
    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        method = scope.get("method", "GET")
        raw = scope.get("raw_path")
        # Match the bytes the client sent: a percent-encoded prefix is not the prefix.
        seen = raw.decode("latin-1") if raw else scope["path"]
        if scope["type"] == "http" and self.wants_slash(seen, method):
            query = scope.get("query_string") or b""
            status, headers_out, body = _slash_redirect(seen, query.decode("latin-1"))
            return await _send_parts(send, status, headers_out, body)
        if self.static_prefix and not hasattr(self, "_native"):
            self._native = _mlflow.served_natively(self.app)
        swap = route_prefix(
            seen,
            self.url_prefix,
            self.static_prefix,
            lambda rest: self._native(rest, method),
        )
        if swap is not None and _under(scope["path"], swap[0]):
            scope = dict(scope, path=swap_prefix(scope["path"], swap))
            if raw:
                scope["raw_path"] = swap_prefix(seen, swap).encode("latin-1")
        path = scope["path"]
        headers = scope.get("headers") or []

        def get_all(name: str):
            wanted = name.lower().encode()
            return [v.decode("latin-1") for k, v in headers if k.lower() == wanted]

        # Answer from the key cache on the event loop (a thread hop costs more than the check);
        # a lookup or an audit write touches the database, so that goes to a worker thread.
        client = scope.get("client")
        peer = client[0] if client else None
        error = self.check(path, method, get_all, peer, cached_only=True)
        if error is NEEDS_LOOKUP:
            error = await anyio.to_thread.run_sync(self.check, path, method, get_all, peer)
        if error is None:
            return await self.app(scope, receive, _json_denials(send))
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        await _send_parts(send, *error)


async def _send_parts(send, status, headers_out, body):
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers_out],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _slash_redirect(path: str, query: str):
    """The UI's index.html loads its assets by relative URLs: ``/api/mlflow`` must become
    ``/api/mlflow/`` in the browser's address bar, or they resolve outside the prefix."""
    location = path + "/" + ("?" + query if query else "")
    return 308, [("Location", location), ("Content-Length", "0")], b""


class WsgiGate(_Gate):
    def __call__(self, environ, start_response):
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "")
        raw = (environ.get("RAW_URI") or environ.get("REQUEST_URI") or "").split("?", 1)[0]
        seen = raw if raw.startswith("/") else path
        if self.wants_slash(seen, method):
            status, headers_out, body = _slash_redirect(seen, environ.get("QUERY_STRING", ""))
            start_response(f"{status} {HTTPStatus(status).phrase}", headers_out)
            return [body]
        swap = route_prefix(seen, self.url_prefix, self.static_prefix)
        if swap is not None and _under(path, swap[0]):
            path = swap_prefix(path, swap)
            environ = dict(environ, PATH_INFO=path)
            for key in ("RAW_URI", "REQUEST_URI"):  # gunicorn, some others
                if _under(environ.get(key, "").split("?", 1)[0], swap[0]):
                    environ[key] = swap_prefix(environ[key], swap)

        def get_all(name: str):
            key = "HTTP_" + name.upper().replace("-", "_")
            value = environ.get(key)
            return [] if value is None else [value]

        error = self.check(
            path, environ.get("REQUEST_METHOD", "GET"), get_all, environ.get("REMOTE_ADDR")
        )
        if error is None:
            return _wsgi_json_denials(self.app, environ, start_response)
        status, headers_out, body = error
        start_response(f"{status} {HTTPStatus(status).phrase}", headers_out)
        return [body]


def _is_plain_denial(status: int, headers) -> bool:
    if status != 403:
        return False
    for name, value in headers:
        if name.lower() in ("content-type", b"content-type"):
            value = value.decode("latin-1") if isinstance(value, bytes) else value
            return not value.startswith("application/json")
    return True


def _denial(message: bytes):
    text = message.decode("utf-8", "replace").strip() or "Permission denied"
    return error_parts("PERMISSION_DENIED", text if text.endswith(".") else text + ".")


def _json_denials(send):
    """Wrap ``send`` so MLflow's plain-text 403s reach the client as our JSON 403."""
    state = {"denial": False, "body": b""}

    async def wrapped(message):
        if message["type"] == "http.response.start" and _is_plain_denial(
            message["status"], message.get("headers", [])
        ):
            state["denial"] = True
            return None
        if state["denial"] and message["type"] == "http.response.body":
            state["body"] += message.get("body", b"")
            if message.get("more_body"):
                return None
            status, headers, body = _denial(state["body"])
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
                }
            )
            return await send({"type": "http.response.body", "body": body})
        return await send(message)

    return wrapped


def _wsgi_json_denials(app, environ, start_response):
    captured = {}

    def capture(status, headers, exc_info=None):
        if _is_plain_denial(int(status.split(" ", 1)[0]), headers):
            captured["denial"] = True
            return lambda data: None
        return start_response(status, headers, exc_info)

    result = app(environ, capture)
    if not captured:
        return result
    try:
        body = b"".join(result)
    finally:
        if hasattr(result, "close"):
            result.close()
    status, headers, body = _denial(body)
    start_response(f"{status} {HTTPStatus(status).phrase}", headers)
    return [body]
