"""The ``authorization_function`` we give MLflow's auth engine, and the identity views read.

MLflow calls ``authorize`` for every protected Flask route (and, through its bridge, for
FastAPI-native routes that have a validator), possibly more than once per request. It returns
a ``werkzeug`` Authorization naming the MLflow user, or our 401 JSON response. It does not
authenticate again: the gate already did, once, and handed the identity on
(``auth/context.py``); only a request that did not pass the gate is authenticated here.
"""

from __future__ import annotations

from flask import current_app, g, has_request_context, request
from werkzeug.datastructures import Authorization

from mlflow_hokusai.auth.authenticator import Authenticator, AuthFailure, Identity
from mlflow_hokusai.auth.context import gate_identity
from mlflow_hokusai.auth.credentials import from_headers
from mlflow_hokusai.errors import flask_error

EXTENSION = "hokusai.authenticator"


def install(app, authenticator: Authenticator) -> None:
    """Make ``authorize`` use ``authenticator`` for requests that did not pass the gate."""
    app.extensions[EXTENSION] = authenticator


def current_identity() -> Identity | None:
    """The authenticated caller of the current Flask request (None before ``authorize``
    has run for a request that did not pass the gate)."""
    identity = g.get("hokusai_identity")
    if identity is None:
        identity = gate_identity(request.environ)
    return identity


def caller_identity() -> Identity | None:
    """``current_identity()`` inside a Flask request; outside one (MLflow's FastAPI-native
    code) the identity the gate handed on, if any."""
    if has_request_context():
        return current_identity()
    return gate_identity({})


def authorize():
    identity = current_identity()
    if identity is None:
        result = current_app.extensions[EXTENSION].resolve(
            from_headers(request.headers.getlist), request.remote_addr
        )
        if isinstance(result, AuthFailure):
            return flask_error(result.error_code, result.message, retry_after=result.retry_after)
        identity = result
    g.hokusai_identity = identity
    return Authorization("basic", {"username": identity.username, "password": ""})
