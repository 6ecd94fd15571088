"""The one JSON error helper: every error we emit has MLflow's shape
``{"error_code": ..., "message": ...}``, whichever layer (ASGI, WSGI, Flask) sends it."""

from __future__ import annotations

import json

REALM = 'Basic realm="mlflow-hokusai"'
_STATUS = {
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "INVALID_PARAMETER_VALUE": 400,
    "BAD_REQUEST": 400,
    "RESOURCE_DOES_NOT_EXIST": 404,
    "RESOURCE_ALREADY_EXISTS": 409,
    "TEMPORARILY_UNAVAILABLE": 503,
}


class HokusaiError(Exception):
    """An error with an MLflow error code, raised by services and turned into JSON by routes."""

    def __init__(self, error_code: str, message: str, status: int | None = None):
        super().__init__(message)
        self.error_code = error_code
        self.message = message
        self.status = status or _STATUS.get(error_code, 400)


def error_parts(error_code: str, message: str, status: int | None = None):
    """(status, headers, body) for an error; headers is a list of (name, value) str pairs."""
    status = status or _STATUS.get(error_code, 400)
    body = json.dumps({"error_code": error_code, "message": message}).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    if status == 401:
        headers.append(("WWW-Authenticate", REALM))
    if status == 503:
        headers.append(("Retry-After", "5"))
    return status, headers, body


def flask_error(error_code: str, message: str, status: int | None = None):
    from flask import Response

    status, headers, body = error_parts(error_code, message, status)
    return Response(body, status=status, headers=[h for h in headers if h[0] != "Content-Length"])
