"""REST endpoints for browser sessions: ``GET …/mlflow/hokusai/sessions/list`` (live ones;
``all=true`` adds ended ones) and ``POST …/mlflow/hokusai/sessions/revoke``
(``auth/sessions.py`` holds the sessions).

Anyone sees and revokes their own sessions ("sign out everywhere" is ``{"username": me}``);
admins anyone's. With sign-in off, both answer 400 ``FEATURE_DISABLED``.
"""

from __future__ import annotations

from flask import Flask, jsonify, request

from mlflow_hokusai.auth.flask_auth import current_identity
from mlflow_hokusai.errors import HokusaiError, invalid_parameter
from mlflow_hokusai.routes.api import Route, json_body, register
from mlflow_hokusai.routes.services import Services, services

BASE = "/mlflow/hokusai/sessions"


def _sessions():
    manager = services().sessions
    if manager is None:
        raise HokusaiError(
            "FEATURE_DISABLED", "Sign-in is not configured on this server (oidc_issuer).", 400
        )
    return manager


def _may_see(identity, username: str) -> None:
    if username != identity.username and not identity.is_admin:
        raise HokusaiError(
            "PERMISSION_DENIED", "Only admins can see or revoke other users' sessions."
        )


def list_sessions():
    manager = _sessions()
    identity = current_identity()
    unknown = sorted(set(request.args) - {"username", "all"})
    if unknown:
        raise invalid_parameter(f"Unknown parameter(s) {', '.join(map(repr, unknown))}.")
    everything = request.args.get("all", "false").lower()
    if everything not in ("true", "false"):
        raise invalid_parameter("'all' must be 'true' or 'false'.")
    username = request.args.get("username") or None
    if username is not None:
        _may_see(identity, username)
    elif not identity.is_admin:
        username = identity.username
    found = []
    for record in manager.list(username, everything=everything == "true"):
        described = manager.describe(record)
        described["current"] = record.id == identity.session_id
        found.append(described)
    return jsonify({"sessions": found})


def revoke_sessions():
    manager = _sessions()
    identity = current_identity()
    body = json_body({"session_id", "username"})
    session_id, username = body.get("session_id"), body.get("username")
    if (session_id is None) == (username is None):
        raise invalid_parameter("Give exactly one of 'session_id' and 'username'.")
    for name, value in (("session_id", session_id), ("username", username)):
        if value is not None and (not isinstance(value, str) or not value or len(value) > 255):
            raise invalid_parameter(f"'{name}' must be a non-empty string.")
    if session_id is not None:
        record = manager.store.get(session_id)
        if record is None or (record.username != identity.username and not identity.is_admin):
            raise HokusaiError("RESOURCE_DOES_NOT_EXIST", f"No session {session_id!r}.")
    else:
        _may_see(identity, username)
    revoked = manager.revoke(
        identity.username, request.remote_addr, session_id=session_id, username=username
    )
    return jsonify({"revoked": [record.id for record in revoked]})


ROUTES = [
    Route(f"{BASE}/list", "GET", list_sessions),
    Route(f"{BASE}/revoke", "POST", revoke_sessions),
]


def install(app: Flask, services: Services) -> None:
    register(app, services, ROUTES)
