"""The outer gate, wrapped around the whole app (ASGI under uvicorn, WSGI otherwise).

It does two things before any MLflow code runs:

1. maps ``HOKUSAI_URL_PREFIX`` (default ``/api/mlflow``) onto ``/``, so every route exists at
   both places and all later code, authorization included, sees only the canonical path;
2. authenticates every request except the public allowlist (health, version, server-info,
   static UI assets). MLflow's auth engine then authorizes; the gate makes sure FastAPI-native
   routes without an MLflow validator cannot be reached anonymously either.
"""

from __future__ import annotations

import re
from http import HTTPStatus

import anyio
import mlflow

from mlflow_hokusai.auth.credentials import from_headers
from mlflow_hokusai.auth.scopes import ReadScope
from mlflow_hokusai.errors import HokusaiError, error_parts
from mlflow_hokusai.keys.service import AuthFailure, KeyService

_PUBLIC_EXACT = frozenset({"/health", "/version", "/favicon.ico"})
_PUBLIC_PATTERN = re.compile(r"/(?:ajax-)?api/\d+\.\d+/mlflow/server-info|/static-files/[^?]*")
_UNCLEAN = re.compile(r"//|/\.\.?(?:/|$)|[%;\\\x00-\x1f]")


def strip_prefix(path: str, prefix: str) -> str:
    """``/api/mlflow/x`` -> ``/x``; paths outside the prefix are returned unchanged."""
    if prefix and (path == prefix or path.startswith(prefix + "/")):
        return path[len(prefix) :] or "/"
    return path


def is_public(path: str, static_prefix: str = "") -> bool:
    """True for the public allowlist only. Paths with dot segments, doubled slashes, encoded
    characters or ``;`` are never public, so no trick can turn a protected path public."""
    if _UNCLEAN.search(path):
        return False
    path = strip_prefix(path, static_prefix)
    return path in _PUBLIC_EXACT or _PUBLIC_PATTERN.fullmatch(path) is not None


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

    def check(self, path: str, method: str, get_all, peer: str | None = None):
        """None when the request may go on, else a response (status, headers, body)."""
        if is_public(path, self.static_prefix):
            if method in ("GET", "HEAD") and strip_prefix(path, self.static_prefix) == "/version":
                # MLflow's auth engine protects /version; the design makes it public, so the
                # gate answers it (the same body MLflow would send).
                body = b"" if method == "HEAD" else mlflow.__version__.encode()
                return 200, [("Content-Type", "text/plain; charset=utf-8")], body
            return None
        try:
            result = self.service.resolve(from_headers(get_all))
        except HokusaiError as error:  # the key database is unreachable: 503, fail closed
            return error_parts(error.error_code, error.message, error.status)
        if isinstance(result, AuthFailure):
            if self.audit is not None:
                self.audit.failed_key(result, peer)
            return error_parts("UNAUTHENTICATED", result.message)
        refusal = self.read_scope.refusal(result, path, method)
        if refusal is not None:
            if self.audit is not None:
                self.audit.read_only_refusal(result, f"{method} {path}", peer)
            return error_parts("PERMISSION_DENIED", refusal)
        return None


class AsgiGate(_Gate):
    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        path = strip_prefix(scope["path"], self.url_prefix)
        if path != scope["path"]:
            raw = scope.get("raw_path")
            scope = dict(scope, path=path)
            if raw is not None:
                scope["raw_path"] = strip_prefix(raw.decode("latin-1"), self.url_prefix).encode(
                    "latin-1"
                )
        headers = scope.get("headers") or []

        def get_all(name: str):
            wanted = name.lower().encode()
            return [v.decode("latin-1") for k, v in headers if k.lower() == wanted]

        # A key lookup may touch the database: keep it off the event loop.
        client = scope.get("client")
        error = await anyio.to_thread.run_sync(
            self.check, path, scope.get("method", "GET"), get_all, client[0] if client else None
        )
        if error is None:
            return await self.app(scope, receive, _json_denials(send))
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        status, headers_out, body = error
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.lower().encode(), v.encode()) for k, v in headers_out],
            }
        )
        await send({"type": "http.response.body", "body": body})


class WsgiGate(_Gate):
    def __call__(self, environ, start_response):
        path = strip_prefix(environ.get("PATH_INFO", ""), self.url_prefix)
        if path != environ.get("PATH_INFO", ""):
            environ = dict(environ, PATH_INFO=path)
            environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "")
            if "RAW_URI" in environ:  # gunicorn
                environ["RAW_URI"] = strip_prefix(environ["RAW_URI"], self.url_prefix)
            if "REQUEST_URI" in environ:
                environ["REQUEST_URI"] = strip_prefix(environ["REQUEST_URI"], self.url_prefix)

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
