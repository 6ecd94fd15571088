"""The ``authorization_function`` we give MLflow's auth engine.

MLflow calls it for every protected Flask route (and, through its bridge, for FastAPI-native
routes that have a validator). It returns a ``werkzeug`` Authorization naming the MLflow user,
or our 401 JSON response.
"""

from __future__ import annotations

from flask import g, request
from werkzeug.datastructures import Authorization

from mlflow_hokusai.auth.credentials import from_headers
from mlflow_hokusai.errors import flask_error
from mlflow_hokusai.keys.service import AuthFailure, Identity, KeyService

_service: KeyService | None = None


def configure(service: KeyService) -> None:
    global _service
    _service = service


def service() -> KeyService:
    if _service is None:
        raise RuntimeError("mlflow-hokusai is not configured: start it with create_app()")
    return _service


def current_identity() -> Identity | None:
    return g.get("hokusai_identity")


def authenticate():
    identity = current_identity()
    if identity is None:
        result = service().resolve(from_headers(request.headers.getlist))
        if isinstance(result, AuthFailure):
            return flask_error("UNAUTHENTICATED", result.message)
        g.hokusai_identity = identity = result
    return Authorization("basic", {"username": identity.username, "password": ""})
