"""The one JSON error helper: every error we emit has MLflow's shape
``{"error_code": ..., "message": ...}``, whichever layer (ASGI, WSGI, Flask) sends it.

``HokusaiError`` is what services raise; the layer that talks HTTP turns it into a response
with ``error_parts`` (ASGI/WSGI) or ``flask_error`` (Flask's one error handler, installed by
``routes/errors.py``). ``database_unavailable`` is the one place that decides whether an
exception means "the database cannot be reached" (503, retry) rather than a bug.
"""

from __future__ import annotations

import json

REALM = 'Basic realm="mlflow-hokusai"'
RETRY_AFTER_SECONDS = "5"
_STATUS = {
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "INVALID_PARAMETER_VALUE": 400,
    "BAD_REQUEST": 400,
    "RESOURCE_DOES_NOT_EXIST": 404,
    "RESOURCE_ALREADY_EXISTS": 409,
    "REQUEST_LIMIT_EXCEEDED": 429,
    "REQUEST_TOO_LARGE": 413,
    "TEMPORARILY_UNAVAILABLE": 503,
}


# Our 503 messages. A 503 with any other body (MLflow's, a driver's) is replaced at the gate:
# every 503 a client sees is our JSON with Retry-After and never a driver's text.
AUTH_DATABASE_DOWN = (
    "The authentication database is unreachable; no request can be authenticated right now. "
    "Retry later."
)
DATABASE_DOWN = "The database is unreachable; retry later."
ARTIFACT_STORE_DOWN = (
    "The artifact store is unreachable; retry later (tracking calls are not affected)."
)
STORE_DOWN = "A store the server needs is unreachable; retry later."
RATE_LIMIT_STORE_DOWN = (
    "The rate-limit store is unreachable and this server refuses rate-limited keys until it is "
    "back (rate_limit_unavailable = closed); retry later."
)
ISSUER_DOWN = (
    "The token's issuer could not be reached to fetch its signing keys; retry later (the "
    "server log names the issuer)."
)
SCANNER_KEYS_DOWN = (
    "The keys that sign secret scanning reports could not be fetched, so this report cannot be "
    "verified; nothing was changed. Retry later (the server log names the address)."
)
OUTAGE_MESSAGES = frozenset(
    {
        SCANNER_KEYS_DOWN,
        AUTH_DATABASE_DOWN,
        DATABASE_DOWN,
        ARTIFACT_STORE_DOWN,
        STORE_DOWN,
        RATE_LIMIT_STORE_DOWN,
        ISSUER_DOWN,
    }
)


class HokusaiError(Exception):
    """An error with an MLflow error code, raised by services and turned into JSON by routes."""

    def __init__(
        self,
        error_code: str,
        message: str,
        status: int | None = None,
        retry_after: int | None = None,
    ):
        super().__init__(message)
        self.error_code = error_code
        self.message = message
        self.status = status or _STATUS.get(error_code, 400)
        self.retry_after = retry_after  # seconds, for a 429


def invalid_parameter(message: str) -> HokusaiError:
    """A 400 ``INVALID_PARAMETER_VALUE``; the message names the field and the rule."""
    return HokusaiError("INVALID_PARAMETER_VALUE", message)


class Unavailable(HokusaiError):
    """A store we need cannot be reached: the request is refused with 503 + Retry-After."""

    def __init__(self, message: str):
        super().__init__("TEMPORARILY_UNAVAILABLE", message)


# Marks a page of ours for a person (a refused sign-in, ``routes/sign_in.py``): the gate's
# error rewriting leaves it as it is.
OUR_PAGE_HEADER = "X-Hokusai-Page"


def error_parts(
    error_code: str, message: str, status: int | None = None, retry_after: int | None = None
):
    """(status, headers, body) for an error; headers is a list of (name, value) str pairs."""
    status = status or _STATUS.get(error_code, 400)
    body = json.dumps({"error_code": error_code, "message": message}).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    if status == 401:
        headers.append(("WWW-Authenticate", REALM))
    if retry_after is not None:
        headers.append(("Retry-After", str(retry_after)))
    elif status == 503:
        headers.append(("Retry-After", RETRY_AFTER_SECONDS))
    return status, headers, body


def parts_of(error: HokusaiError):
    """``error_parts`` for a raised ``HokusaiError``."""
    return error_parts(error.error_code, error.message, error.status)


def is_our_outage(body: bytes) -> bool:
    """True when a 503 body is one of ours (so it needs no replacing)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return False
    return (
        isinstance(data, dict)
        and data.get("error_code") == "TEMPORARILY_UNAVAILABLE"
        and data.get("message") in OUTAGE_MESSAGES
    )


def flask_error(
    error_code: str, message: str, status: int | None = None, retry_after: int | None = None
):
    from flask import Response

    status, headers, body = error_parts(error_code, message, status, retry_after)
    return Response(body, status=status, headers=[h for h in headers if h[0] != "Content-Length"])


def database_unavailable(error: BaseException | None) -> bool:
    """True when ``error`` means the database cannot be reached right now (connection refused
    or cut, server shutting down, SQLite locked), as opposed to a bug in a query.

    SQLAlchemy raises OperationalError/InterfaceError for those; MLflow's stores wrap the same
    errors in an MlflowException with error code TEMPORARILY_UNAVAILABLE.
    """
    import sqlalchemy as sa

    while error is not None:
        if isinstance(error, (sa.exc.OperationalError, sa.exc.InterfaceError)):
            return True
        if getattr(error, "error_code", None) == "TEMPORARILY_UNAVAILABLE":
            return True
        error = error.__cause__
    return False


def body_too_large(limit: int) -> HokusaiError:
    """The 413 for a request body over ``limit`` bytes (what a public endpoint reads at most)."""
    size = f"{limit // 1048576} MiB" if limit % 1048576 == 0 else f"{limit // 1024} KiB"
    return HokusaiError(
        "REQUEST_TOO_LARGE",
        f"The request body is larger than {limit:,} bytes ({size}), the most this endpoint reads.",
    )
