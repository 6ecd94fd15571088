"""MLflow's error answers, rewritten into ours on the way out (both servers).

MLflow's plain-text 403s become our JSON 403 (with the resource-limit message where a key's
limits took the permission away), a 500 never shows the client Python's error text, a 503
that is not ours becomes ours, a 400 or 409 never shows its database's text, and a page that
forbids framing says so in both headers. ``asgi_send`` wraps an ASGI ``send``, ``wsgi_call``
calls a WSGI app; ``send_parts`` and ``wsgi_send`` send a response the gate made itself.
"""

from __future__ import annotations

import json
import logging
import re
from http import HTTPStatus

from mlflow_hokusai.errors import (
    DATABASE_DOWN,
    OUR_PAGE_HEADER,
    STORE_DOWN,
    error_parts,
    is_our_outage,
)

_logger = logging.getLogger(__name__)
INTERNAL_MESSAGE = (
    "The server could not handle this request (its log has the details). If the request body "
    "is unusual, check it against the API reference."
)


async def send_parts(send, status, headers_out, body):
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers_out],
        }
    )
    await send({"type": "http.response.body", "body": body})


def wsgi_send(start_response, parts):
    status, headers_out, body = parts
    start_response(f"{status} {HTTPStatus(status).phrase}", headers_out)
    return [body]


def _header(headers, wanted: str) -> str | None:
    for name, value in headers:
        name = name.decode("latin-1") if isinstance(name, bytes) else name
        if name.lower() == wanted:
            return value.decode("latin-1") if isinstance(value, bytes) else value
    return None


def _needs_rewrite(status: int, headers, html_ok: bool = True) -> bool:
    """MLflow's plain-text 403s become our JSON 403; every 503 may need to become ours; a 500
    never shows the client Python's error text, a 400 or 409 never its database's; an HTML
    404 or 405 becomes JSON unless the client asked for a page (``html_ok``)."""
    if _header(headers, OUR_PAGE_HEADER.lower()) is not None:  # a page of ours, for a person
        return False
    if status in (400, 409, 500, 503):
        return True
    if status in (404, 405):
        return not html_ok and _is_html(headers)
    if status != 403:
        return False
    return not (_header(headers, "content-type") or "").startswith("application/json")


def _is_html(headers) -> bool:
    return (_header(headers, "content-type") or "").lower().startswith("text/html")


def _rewritten(status: int, headers, body: bytes, forbidden=None):
    """The (status, headers, body) the client gets instead, or None to send the original.
    ``forbidden()``: the message for a 403, or None for MLflow's own."""
    if status in (404, 405):  # an HTML page for an API client (``_needs_rewrite``)
        return _not_found(status, headers)
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


NOT_FOUND_MESSAGE = "Nothing is at this address (the server answered 404)."


def _not_found(status: int, headers):
    """Our JSON for MLflow's HTML 404 or 405 page (e.g. a static file or an artifact that does
    not exist; a path no route serves is the gate's own 404)."""
    if status == 404:
        return error_parts("RESOURCE_DOES_NOT_EXIST", NOT_FOUND_MESSAGE, 404)
    allowed = _header(headers, "allow")
    message = "This method is not allowed here" + (f": use {allowed}." if allowed else ".")
    status, out, body = error_parts("METHOD_NOT_ALLOWED", message, 405)
    return status, out + ([("Allow", allowed)] if allowed else []), body


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


def asgi_send(send, forbidden=None, html_ok: bool = False):
    """Wrap ``send`` so MLflow's plain-text 403s, its 500s, any 503 that is not ours and 400s or
    409s with database text reach the client as our JSON (``_rewritten``; such a body is held
    back until complete), and a page that forbids framing says so in both headers."""
    state = {"start": None, "body": []}

    async def wrapped(message):
        if message["type"] == "http.response.start":
            headers = message.get("headers", [])
            if _needs_rewrite(message["status"], headers, html_ok):
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
            return await send_parts(send, *replacement)
        return await send(message)

    return wrapped


def wsgi_call(app, environ, start_response, forbidden=None, html_ok: bool = False):
    """``app(environ, start_response)`` with its errors rewritten as ``asgi_send`` does."""
    captured = {}

    def capture(status, headers, exc_info=None):
        code = int(status.split(" ", 1)[0])
        if _needs_rewrite(code, headers, html_ok):
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
    return wsgi_send(start_response, replacement)
