"""The one error path of the Flask app: how exceptions become responses.

- ``HokusaiError`` (our services' errors): JSON with the status the error carries;
- ``MlflowException`` raised outside MLflow's own handlers (its auth hooks, our prechecks):
  MLflow's JSON with its own status;
- outages become 503 JSON with ``Retry-After``, never a 500 or a stack trace
  (``errors.database_unavailable`` decides what counts as the database being unreachable).

The gate answers 503 itself when the key lookup cannot reach the database. A request whose key
was still cached gets that far and then meets the outage inside MLflow: in its auth engine's
``before_request`` (user and permission lookups, which Flask would turn into a bare 500) or in
its stores (which answer 503 ``TEMPORARILY_UNAVAILABLE`` with the driver's text). This module
maps what reaches Flask; whatever 503 still is not ours (MLflow's FastAPI middleware answers
some itself) the gate replaces by ours on the way out (``gate/json_errors.py``). An unreachable
artifact store (S3) is mapped the same way, in the Flask handlers and in MLflow's
FastAPI-native artifact routes; tracking calls do not need it. Only
errors that mean "unreachable" are mapped; anything else keeps its own status, so genuine bugs
still show as errors in the log.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.exceptions import HTTPClientError
from flask import Flask, Response
from mlflow.exceptions import MlflowException

from mlflow_hokusai.errors import (
    ARTIFACT_STORE_DOWN,
    DATABASE_DOWN,
    HokusaiError,
    database_unavailable,
    error_parts,
    flask_error,
)

_logger = logging.getLogger(__name__)
MESSAGE = DATABASE_DOWN
ARTIFACT_MESSAGE = ARTIFACT_STORE_DOWN
# Connection refused/closed/timed out on the way to S3 (not S3 saying no: that is a ClientError).
_ARTIFACT_STORE_DOWN = (BotoConnectionError, HTTPClientError)
_DATABASE_DOWN = (sa.exc.OperationalError, sa.exc.InterfaceError)


def _unavailable(error: Exception) -> Response:
    _logger.warning("database unreachable while serving a request: %s", error)
    return flask_error("TEMPORARILY_UNAVAILABLE", MESSAGE)


def _on_hokusai_error(error: HokusaiError) -> Response:
    return flask_error(error.error_code, error.message, error.status, error.retry_after)


def _on_mlflow_exception(error: MlflowException) -> Response:
    """MLflow exceptions raised outside MLflow's own handlers (its auth hooks): JSON with their
    own status, as MLflow's handlers would answer."""
    if database_unavailable(error):
        return _unavailable(error)
    return Response(
        error.serialize_as_json(),
        status=error.get_http_status_code(),
        mimetype="application/json",
    )


def _on_sqlalchemy_error(error: sa.exc.SQLAlchemyError) -> Response:
    # Registered for OperationalError and InterfaceError only: connection-level failures.
    return _unavailable(error)


def _on_artifact_store_down(error: Exception) -> Response:
    _logger.warning("artifact store unreachable while serving a request: %s", error)
    return flask_error("TEMPORARILY_UNAVAILABLE", ARTIFACT_MESSAGE)


def _install_native(native_app) -> None:
    """The same mapping for MLflow's FastAPI-native routes (e.g. streaming artifact transfer)."""
    from starlette.responses import Response as StarletteResponse

    def handler(message: str):
        async def handle(_request, error):
            _logger.warning("%s (%s)", message, error)
            status, headers, body = error_parts("TEMPORARILY_UNAVAILABLE", message)
            return StarletteResponse(body, status_code=status, headers=dict(headers))

        return handle

    async def hokusai_error(_request, error: HokusaiError):
        status, headers, body = error_parts(
            error.error_code, error.message, error.status, error.retry_after
        )
        return StarletteResponse(body, status_code=status, headers=dict(headers))

    native_app.add_exception_handler(HokusaiError, hokusai_error)
    for error_class in _ARTIFACT_STORE_DOWN:
        native_app.add_exception_handler(error_class, handler(ARTIFACT_MESSAGE))
    for error_class in _DATABASE_DOWN:
        native_app.add_exception_handler(error_class, handler(MESSAGE))


def install(app: Flask, native_app=None) -> None:
    """``native_app``: the FastAPI app MLflow serves under uvicorn (None under WSGI)."""
    app.register_error_handler(HokusaiError, _on_hokusai_error)
    app.register_error_handler(MlflowException, _on_mlflow_exception)
    for error_class in _DATABASE_DOWN:
        app.register_error_handler(error_class, _on_sqlalchemy_error)
    for error_class in _ARTIFACT_STORE_DOWN:
        app.register_error_handler(error_class, _on_artifact_store_down)
    if native_app is not None and native_app is not app:
        _install_native(native_app)
