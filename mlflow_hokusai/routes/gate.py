"""The outer gate, wrapped around the whole app (ASGI under uvicorn, WSGI otherwise).

It does two things before any MLflow code runs:

1. maps ``HOKUSAI_URL_PREFIX`` (default ``/api/mlflow``) onto MLflow's root (``/``, or the
   ``--static-prefix``), so every route exists at both places and all later code, authorization
   included, sees only the canonical path (see ``route_prefix``);
2. authenticates every request except the public allowlist (health, version, server-info,
   static UI assets), once, refuses what a read-only key may not do, and hands the identity to
   everything after it (``auth/context.py``). MLflow's auth engine then authorizes; the gate
   makes sure FastAPI-native routes without an MLflow validator cannot be reached
   anonymously either.

The pure parts (prefix mapping, the public allowlist, path cleanliness) are module functions,
tested without a server in ``tests/test_gate_unit.py``.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from http import HTTPStatus

import anyio
import mlflow

from mlflow_hokusai.auth import resource_limits
from mlflow_hokusai.auth.addresses import ClientAddress
from mlflow_hokusai.auth.authenticator import AuthFailure
from mlflow_hokusai.auth.cache import clean_request
from mlflow_hokusai.auth.context import ENVIRON_KEY, reset_identity, set_identity
from mlflow_hokusai.auth.credentials import from_headers
from mlflow_hokusai.errors import (
    DATABASE_DOWN,
    STORE_DOWN,
    HokusaiError,
    error_parts,
    is_our_outage,
    parts_of,
)

_logger = logging.getLogger(__name__)
INTERNAL_MESSAGE = (
    "The server could not handle this request (its log has the details). If the request body "
    "is unusual, check it against the API reference."
)
_PUBLIC_EXACT = frozenset({"/health", "/version", "/favicon.ico"})
_PUBLIC_PATTERN = re.compile(
    r"/(?:ajax-)?api/\d+\.\d+/mlflow/server-info|/static-files/[^?]*"
    # keyless CI: the workload's OIDC token is the credential (routes/federation_api.py)
    r"|/(?:ajax-)?api/2\.0/mlflow/hokusai/token-exchange"
)
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


_OUTCOMES = {"rate-limited": "rate_limited", "ip-not-allowed": "forbidden_ip"}


class _Gate:
    """What both gates share: prefix mapping, the public allowlist, and the decision after
    authentication (scope, audit). Authentication itself is the authenticator's."""

    def __init__(self, app, services):
        self.app = app
        self.authenticator = services.authenticator
        self.read_scope = services.read_scope
        self.audit = services.audit
        self.url_prefix = services.settings.url_prefix
        self.static_prefix = services.static_prefix
        self.native = services.native_routes
        self.addresses = ClientAddress(services.settings.trusted_proxies)
        self.metrics = services.metrics
        self.rate_limits = services.rate_limits
        self.limited_routes = resource_limits.LimitedRoutes(services.read_scope)

    def wants_slash(self, seen: str, method: str) -> bool:
        return bool(self.url_prefix) and seen == self.url_prefix and method in ("GET", "HEAD")

    def swap_for(self, seen: str, method: str):
        """``route_prefix`` for this server (native routes ignore ``--static-prefix``)."""
        return route_prefix(
            seen,
            self.url_prefix,
            self.static_prefix,
            lambda rest: self.native.match(rest, method) is not None,
        )

    def public_answer(self, path: str, method: str):
        """For a public path: the response the gate gives itself, or None to pass it on."""
        if method in ("GET", "HEAD") and strip_prefix(path, self.static_prefix) == "/version":
            # MLflow's auth engine protects /version; the design makes it public, so the
            # gate answers it (the same body MLflow would send).
            body = b"" if method == "HEAD" else mlflow.__version__.encode()
            return 200, [("Content-Type", "text/plain; charset=utf-8")], body
        return None

    def refusal(self, result, path: str, method: str, peer: str | None):
        """After authentication: None to let the request on, else the error response.
        Refusals of known keys are audited (off the request's path, never blocking)."""
        if isinstance(result, AuthFailure):
            self.metrics.request(_OUTCOMES.get(result.reason, "unauthenticated"))
            self.audit.failed_login(result, peer)
            return error_parts(result.error_code, result.message, retry_after=result.retry_after)
        refusal = self.read_scope.refusal(result, path, method)
        if refusal is not None:
            self.metrics.request("forbidden_scope")
            self.audit.read_only_refusal(result, f"{method} {path}", peer)
            return error_parts("PERMISSION_DENIED", refusal)
        return None

    def limits_refusal(self, identity, path: str, method: str, peer, workspace: str | None):
        """For a key with resource or workspace limits: (the 403 response or None, the
        request's ``LimitNotes`` or None). ``workspace``: the request's X-MLflow-Workspace."""
        limits = identity.limits
        if not limits.limited and limits.workspace is None:
            return None, None
        message = None
        if limits.workspace is not None and not self.limited_routes.is_free(path, method):
            message = resource_limits.workspace_refusal(identity, workspace)
        notes = resource_limits.LimitNotes()
        if message is None and limits.limited:
            message = self.limited_routes.refusal(identity, path, method, notes)
        if message is None:
            return None, notes if limits.limited else None
        self.metrics.request("forbidden_scope")
        self.audit.limited_refusal(identity, f"{method} {path}", peer)
        return error_parts("PERMISSION_DENIED", message), None

    def forbidden_by_limits(self, identity, notes, request_line: str, peer):
        """For ``_json_errors``: the message of a 403 MLflow's engine gave a limited key when
        the key's limits (not its owner's rights) took the permission away, else None."""
        if notes is None or not notes.lowered:
            return None
        self.audit.limited_refusal(identity, request_line, peer)
        return resource_limits.denial_message(identity)

    def over_limit(self, identity, verdict, peer: str | None):
        """After ``refusal`` let the request on: (the 429 response or None, the ``RateLimit-*``
        headers every response to a rate-limited key carries)."""
        if verdict is None:
            self.metrics.request("ok")
            return None, ()
        if verdict.allowed:
            self.metrics.request("ok")
            return None, verdict.headers()
        self.metrics.request("rate_limited")
        self.audit.rate_limited(identity, verdict, peer)
        status, headers, body = error_parts(
            "REQUEST_LIMIT_EXCEEDED", verdict.message(identity.key_prefix)
        )
        return (status, headers + verdict.headers(), body), ()


class AsgiGate(_Gate):
    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        method = scope.get("method", "GET")
        raw = scope.get("raw_path")
        # Match the bytes the client sent: a percent-encoded prefix is not the prefix.
        seen = raw.decode("latin-1") if raw else scope["path"]
        if scope["type"] == "http" and self.wants_slash(seen, method):
            query = (scope.get("query_string") or b"").decode("latin-1")
            return await _send_parts(send, *_slash_redirect(seen, query))
        scope = self._canonical(scope, seen, method)
        path = scope["path"]
        if is_public(path, self.static_prefix):
            answer = self.public_answer(path, method)
            if answer is None:
                return await self.app(scope, receive, _json_errors(send))
            return await _send_parts(send, *answer)
        client = scope.get("client")
        forwarded = _values(scope, b"x-forwarded-for")
        peer = self.addresses.of(client[0] if client else None, forwarded)
        result = await self._authenticate(scope, peer)
        error = result if isinstance(result, tuple) else self.refusal(result, path, method, peer)
        notes = None
        if error is None:
            workspace = next(iter(_values(scope, b"x-mlflow-workspace")), None)
            error, notes = self.limits_refusal(result, path, method, peer, workspace)
        limit_headers = ()
        if error is None:
            error, limit_headers = await self._rate_limit(result, peer)
        if error is not None:
            if scope["type"] == "websocket":
                return await send({"type": "websocket.close", "code": 1008})
            return await _send_parts(send, *error)
        scope = _basic_names(scope, result)
        if limit_headers:
            send = _with_headers(send, limit_headers)
        forbidden = None
        if notes is not None:
            request_line = f"{method} {path}"

            def forbidden():
                return self.forbidden_by_limits(result, notes, request_line, peer)

        # Both are set for every request, None included: a value must never come from an
        # earlier request (the context MLflow's Flask app runs in can outlive a request on a
        # kept-alive connection; tests/security/test_findings_22.py shows it).
        token = set_identity(result)
        notes_token = resource_limits.enter(notes)
        try:
            with clean_request():
                await self.app(scope, receive, _json_errors(send, forbidden))
        finally:
            resource_limits.leave(notes_token)
            reset_identity(token)

    def _canonical(self, scope, seen: str, method: str):
        swap = self.swap_for(seen, method)
        if swap is None or not _under(scope["path"], swap[0]):
            return scope
        scope = dict(scope, path=swap_prefix(scope["path"], swap))
        if scope.get("raw_path"):
            scope["raw_path"] = swap_prefix(seen, swap).encode("latin-1")
        return scope

    async def _rate_limit(self, identity, peer: str | None):
        """``over_limit`` for this request: the verdict comes from local state on the event
        loop when it can, else from the store in a worker thread."""
        if identity.rate_limit is None:
            return self.over_limit(identity, None, peer)
        verdict = self.rate_limits.peek(identity.counter_id, identity.rate_limit)
        if verdict is None:
            try:
                verdict = await anyio.to_thread.run_sync(
                    self.rate_limits.check, identity.counter_id, identity.rate_limit
                )
            except HokusaiError as error:  # the store is down and the server fails closed
                self.metrics.request("unavailable")
                return parts_of(error), ()
        return self.over_limit(identity, verdict, peer)

    async def _authenticate(self, scope, peer: str | None):
        """The identity or failure, or an error response (status, headers, body) when the
        key database is unreachable. A cached answer comes on the event loop (a thread hop
        costs more than the check); a lookup goes to a worker thread."""
        headers = scope.get("headers") or []

        def get_all(name: str):
            wanted = name.lower().encode()
            return [v.decode("latin-1") for k, v in headers if k.lower() == wanted]

        credential = from_headers(get_all)
        result = self.authenticator.peek(credential, peer)
        if result is not None:
            return result
        try:
            return await anyio.to_thread.run_sync(self.authenticator.resolve, credential, peer)
        except HokusaiError as error:  # the key database is unreachable: 503, fail closed
            self.metrics.request("unavailable")
            return parts_of(error)


def _with_headers(send, extra):
    """Wrap ``send`` so the response carries ``extra`` headers (str pairs)."""
    encoded = [(name.lower().encode(), value.encode()) for name, value in extra]

    async def wrapped(message):
        if message["type"] == "http.response.start":
            message = dict(message, headers=[*message.get("headers", []), *encoded])
        return await send(message)

    return wrapped


def _values(scope, name: bytes) -> list[str]:
    return [v.decode("latin-1") for k, v in scope.get("headers") or [] if k.lower() == name]


def basic_authorization(identity) -> str:
    """The ``Authorization`` header MLflow sees after a Basic login: the authenticated user
    name and no secret. MLflow's handlers read the Basic user name (e.g. to label a job), and
    it must be the authenticated one, not what the client typed beside a key."""
    user = base64.b64encode(f"{identity.username}:".encode()).decode("ascii")
    return f"Basic {user}"


def _basic_names(scope, identity):
    headers = scope.get("headers") or []
    if not any(k.lower() == b"authorization" and v[:6].lower() == b"basic " for k, v in headers):
        return scope
    value = basic_authorization(identity).encode("latin-1")
    rewritten = [(k, value if k.lower() == b"authorization" else v) for k, v in headers]
    return dict(scope, headers=rewritten)


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
            return _wsgi_send(
                start_response, _slash_redirect(seen, environ.get("QUERY_STRING", ""))
            )
        swap = self.swap_for(seen, method)
        if swap is not None and _under(path, swap[0]):
            path = swap_prefix(path, swap)
            environ = dict(environ, PATH_INFO=path)
            for key in ("RAW_URI", "REQUEST_URI"):  # gunicorn, some others
                if _under(environ.get(key, "").split("?", 1)[0], swap[0]):
                    environ[key] = swap_prefix(environ[key], swap)
        if is_public(path, self.static_prefix):
            answer = self.public_answer(path, method)
            if answer is None:
                return _wsgi_json_errors(self.app, environ, start_response)
            return _wsgi_send(start_response, answer)

        def get_all(name: str):
            value = environ.get("HTTP_" + name.upper().replace("-", "_"))
            return [] if value is None else [value]

        forwarded = environ.get("HTTP_X_FORWARDED_FOR")
        peer = self.addresses.of(environ.get("REMOTE_ADDR"), [forwarded] if forwarded else [])
        try:
            result = self.authenticator.resolve(from_headers(get_all), peer)
        except HokusaiError as error:  # the key database is unreachable: 503, fail closed
            self.metrics.request("unavailable")
            return _wsgi_send(start_response, parts_of(error))
        error = self.refusal(result, path, method, peer)
        notes = None
        if error is None:
            workspace = environ.get("HTTP_X_MLFLOW_WORKSPACE")
            error, notes = self.limits_refusal(result, path, method, peer, workspace)
        limit_headers = ()
        if error is None:
            verdict = None
            if result.rate_limit is not None:
                try:
                    verdict = self.rate_limits.check(result.counter_id, result.rate_limit)
                except HokusaiError as failure:  # the store is down and we fail closed
                    self.metrics.request("unavailable")
                    return _wsgi_send(start_response, parts_of(failure))
            error, limit_headers = self.over_limit(result, verdict, peer)
        if error is not None:
            return _wsgi_send(start_response, error)
        if limit_headers:
            start_response = _wsgi_with_headers(start_response, limit_headers)
        environ[ENVIRON_KEY] = result
        if environ.get("HTTP_AUTHORIZATION", "")[:6].lower() == "basic ":
            environ["HTTP_AUTHORIZATION"] = basic_authorization(result)
        if notes is None:
            return _wsgi_json_errors(self.app, environ, start_response)
        token = resource_limits.enter(notes)
        try:
            return _wsgi_json_errors(
                self.app,
                environ,
                start_response,
                lambda: self.forbidden_by_limits(result, notes, f"{method} {path}", peer),
            )
        finally:
            resource_limits.leave(token)


def _wsgi_with_headers(start_response, extra):
    def wrapped(status, headers, exc_info=None):
        return start_response(status, [*headers, *extra], exc_info)

    return wrapped


def _wsgi_send(start_response, parts):
    status, headers_out, body = parts
    start_response(f"{status} {HTTPStatus(status).phrase}", headers_out)
    return [body]


def _header(headers, wanted: str) -> str | None:
    for name, value in headers:
        name = name.decode("latin-1") if isinstance(name, bytes) else name
        if name.lower() == wanted:
            return value.decode("latin-1") if isinstance(value, bytes) else value
    return None


def _needs_rewrite(status: int, headers) -> bool:
    """MLflow's plain-text 403s become our JSON 403; every 503 may need to become ours; a 500
    never shows the client Python's error text, a 400 or 409 never its database's."""
    if status in (400, 409, 500, 503):
        return True
    if status != 403:
        return False
    return not (_header(headers, "content-type") or "").startswith("application/json")


def _rewritten(status: int, headers, body: bytes, forbidden=None):
    """The (status, headers, body) the client gets instead, or None to send the original.
    ``forbidden()``: the message for a 403, or None for MLflow's own."""
    if status == 500 and (disabled := _feature_disabled(body)) is not None:
        # MLflow answers a request for a feature this server has off (a workspace header
        # without workspaces) with its message and a 500; it is the request that is wrong.
        return error_parts("FEATURE_DISABLED", disabled, 400)
    if status == 500:
        _logger.error("MLflow answered 500 (the client gets a generic message): %s", body[:2000])
        return error_parts("INTERNAL_ERROR", INTERNAL_MESSAGE, 500)
    if status in (400, 409):
        return _without_database_text(status, body)
    if status == 503:
        if is_our_outage(body) and _header(headers, "retry-after"):
            return None
        _logger.warning("replaced a 503 from MLflow: %s", body[:500])
        # MLflow's stores answer a lost database connection as TEMPORARILY_UNAVAILABLE JSON.
        mlflow_store = b'"TEMPORARILY_UNAVAILABLE"' in body
        return error_parts("TEMPORARILY_UNAVAILABLE", DATABASE_DOWN if mlflow_store else STORE_DOWN)
    message = forbidden() if forbidden is not None else None
    if message is not None:
        return error_parts("PERMISSION_DENIED", message)
    text = body.decode("utf-8", "replace").strip() or "Permission denied"
    return error_parts("PERMISSION_DENIED", text if text.endswith(".") else text + ".")


# MLflow answers some database refusals (a name already taken, a value too long) with a 400
# whose message is the driver's error: its class, the SQL statement and its parameters (another
# user's names among them). A body holding any of these is such an answer.
_DATABASE_TEXT = (
    b"[SQL:",
    b"sqlalche.me/",
    b"IntegrityError",
    b"psycopg",
    b"sqlite3.",
    b"pymysql",
    b"MySQLdb",
    b"pyodbc",
)
_CONFLICT_TEXT = (b"IntegrityError", b"UNIQUE constraint", b"duplicate key", b"Duplicate entry")
_ERROR_CODE = re.compile(r"[A-Z][A-Z_]{0,63}")
CONFLICT_MESSAGE = (
    "The request conflicts with an existing resource (for example, the name is already taken)."
)
DATABASE_REFUSED_MESSAGE = (
    "The database refused this request (the server log has the details). Check its values "
    "against the API reference."
)


def _without_database_text(status: int, body: bytes):
    """For a 400 or 409 whose body holds database text: the same status and error code with a
    plain message (the original goes to the log); None for every other body (unparsed)."""
    if not any(marker in body for marker in _DATABASE_TEXT):
        return None
    try:
        error = json.loads(body)
    except (ValueError, RecursionError):
        error = None
    code = error.get("error_code") if isinstance(error, dict) else None
    if not isinstance(code, str) or _ERROR_CODE.fullmatch(code) is None:
        code = "RESOURCE_ALREADY_EXISTS" if status == 409 else "INVALID_PARAMETER_VALUE"
    _logger.warning(
        "MLflow answered %s with database text (the client gets a plain message): %s",
        status,
        body[:2000],
    )
    conflict = any(marker in body for marker in _CONFLICT_TEXT)
    return error_parts(code, CONFLICT_MESSAGE if conflict else DATABASE_REFUSED_MESSAGE, status)


def _deny_framing(headers):
    """MLflow's security middleware sets ``X-Frame-Options`` (``SAMEORIGIN`` unless configured)
    on every response after its view made it. Where the response's own Content-Security-Policy
    forbids every frame ancestor (the key page, ``routes/key_page``), ``X-Frame-Options`` must
    say so too: the headers with ``X-Frame-Options: DENY``, else None (unchanged)."""
    policy = _header(headers, "content-security-policy")
    if policy is None or "frame-ancestors 'none'" not in policy:
        return None
    as_bytes = isinstance(headers[0][0], bytes)
    kept = [
        (name, value)
        for name, value in headers
        if (name.decode("latin-1") if as_bytes else name).lower() != "x-frame-options"
    ]
    return [*kept, (b"x-frame-options", b"DENY") if as_bytes else ("X-Frame-Options", "DENY")]


def _feature_disabled(body: bytes) -> str | None:
    """The message of an MLflow FEATURE_DISABLED error body, else None."""
    if b'"FEATURE_DISABLED"' not in body:
        return None
    try:
        error = json.loads(body)
    except ValueError:
        return None
    if not isinstance(error, dict) or error.get("error_code") != "FEATURE_DISABLED":
        return None
    return str(error.get("message") or "This feature is not enabled on this server.")


def _json_errors(send, forbidden=None):
    """Wrap ``send`` so MLflow's plain-text 403s, its 500s, any 503 that is not ours and 400s or
    409s with database text reach the client as our JSON (``_rewritten``; such a body is held
    back until complete), and a page that forbids framing says so in both headers."""
    state = {"start": None, "body": []}

    async def wrapped(message):
        if message["type"] == "http.response.start":
            headers = message.get("headers", [])
            if _needs_rewrite(message["status"], headers):
                state["start"] = message
                return None
            if (denied := _deny_framing(headers)) is not None:
                message = dict(message, headers=denied)
        if state["start"] is not None and message["type"] == "http.response.body":
            state["body"].append(message.get("body", b""))
            if message.get("more_body"):
                return None
            start, body = state["start"], b"".join(state["body"])
            replacement = _rewritten(start["status"], start.get("headers", []), body, forbidden)
            if replacement is None:
                await send(start)
                return await send({"type": "http.response.body", "body": body})
            return await _send_parts(send, *replacement)
        return await send(message)

    return wrapped


def _wsgi_json_errors(app, environ, start_response, forbidden=None):
    captured = {}

    def capture(status, headers, exc_info=None):
        code = int(status.split(" ", 1)[0])
        if _needs_rewrite(code, headers):
            captured.update(status=status, code=code, headers=headers, exc_info=exc_info)
            return lambda data: None
        return start_response(status, _deny_framing(headers) or headers, exc_info)

    result = app(environ, capture)
    if not captured:
        return result
    try:
        body = b"".join(result)
    finally:
        if hasattr(result, "close"):
            result.close()
    replacement = _rewritten(captured["code"], captured["headers"], body, forbidden)
    if replacement is None:
        start_response(captured["status"], captured["headers"], captured["exc_info"])
        return [body]
    return _wsgi_send(start_response, replacement)
