"""Our REST endpoints' shared parts: the one route registration helper, ``whoami``, and the
request-body parser.

Each route exists under ``/api/2.0/…`` and ``/ajax-api/2.0/…`` (and, through the gate, under
the URL prefix). MLflow's engine has already authenticated the caller; the views authorize.
"""

from __future__ import annotations

import functools
import json
from typing import NamedTuple

from flask import Flask, jsonify, request

from mlflow_hokusai import _mlflow
from mlflow_hokusai.auth.flask_auth import current_identity
from mlflow_hokusai.auth.origins import cross_origin_refusal
from mlflow_hokusai.errors import HokusaiError
from mlflow_hokusai.keys.management import Actor
from mlflow_hokusai.routes.services import Services


class Route(NamedTuple):
    base: str  # e.g. "/mlflow/hokusai/whoami", under /api/2.0 and /ajax-api/2.0
    method: str
    view: object


def actor() -> Actor:
    """The caller, as the key-management and audit rules see them."""
    return Actor.from_identity(current_identity(), request.remote_addr)


def whoami():
    identity = current_identity()
    answer = {
        "username": identity.username,
        "is_admin": identity.is_admin,
        "key_id": identity.key_id,
        "scope": identity.scope,
        "limits": identity.limits.to_dict() if identity.limits.to_json() else None,
        "federated": identity.federated,  # a token exchange's key: it manages no keys
    }
    if identity.session_id is not None:  # signed in with the identity provider
        answer["session_id"] = identity.session_id
    return jsonify(answer)


ROUTES = [Route("/mlflow/hokusai/whoami", "GET", whoami)]


def _same_origin_only(view):
    """Refuse a state-changing call a page on another origin makes a browser send
    (``auth/origins.py``)."""

    @functools.wraps(view)
    def checked(*args, **kwargs):
        from mlflow.environment_variables import MLFLOW_SERVER_CORS_ALLOWED_ORIGINS

        listed = MLFLOW_SERVER_CORS_ALLOWED_ORIGINS.get()
        refusal = cross_origin_refusal(
            request.headers.get("Origin"),
            request.headers.get("Referer"),
            request.host,
            [o.strip() for o in listed.split(",")] if listed else None,
        )
        if refusal is not None:
            raise HokusaiError("PERMISSION_DENIED", refusal)
        return view(*args, **kwargs)

    return checked


def register(app: Flask, services: Services, routes: list[Route]) -> None:
    """Add routes under both API roots; MLflow's engine lets any authenticated caller reach
    them and the views authorize. Routes that change state accept no other origin's page."""
    rules = []
    for route in routes:
        view = route.view if route.method in ("GET", "HEAD") else _same_origin_only(route.view)
        for path in services.api_paths(route.base):
            app.add_url_rule(
                path, endpoint=f"hokusai:{path}", view_func=view, methods=[route.method]
            )
            rules.append((path, route.method))
    _mlflow.patches.allow_authenticated(rules)


def json_body(allowed: set[str]) -> dict:
    """The request's JSON object (empty body: ``{}``), with only ``allowed`` fields."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise HokusaiError(
            "INVALID_PARAMETER_VALUE", "The request body is not valid JSON."
        ) from None
    if not isinstance(body, dict):
        raise HokusaiError("INVALID_PARAMETER_VALUE", "The request body must be a JSON object.")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise HokusaiError(
            "INVALID_PARAMETER_VALUE",
            f"Unknown field(s) {', '.join(map(repr, unknown))}; expected "
            f"{', '.join(map(repr, sorted(allowed)))}.",
        )
    return body


def mlflow_style_json() -> dict | None:
    """The body the way MLflow's handlers read it (forced JSON, double-encoded allowed), or
    None when it is not a JSON object: for hooks that look at a request before MLflow does."""
    body = request.get_json(force=True, silent=True)
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except (ValueError, RecursionError):
            return None
    return body if isinstance(body, dict) else None


def install(app: Flask, services: Services) -> None:
    register(app, services, ROUTES)
