"""Our REST endpoints, registered on MLflow's Flask app beside its own.

Each exists under ``/api/2.0/…`` and ``/ajax-api/2.0/…`` (and, through the gate, under the
URL prefix). MLflow's engine has already authenticated the caller; the handlers authorize.
"""

from __future__ import annotations

from flask import Flask, jsonify

from mlflow_hokusai import _mlflow
from mlflow_hokusai.auth.flask_auth import current_identity


def paths(base: str) -> list[str]:
    prefix = _mlflow.static_prefix()
    return [f"{prefix}/api/2.0{base}", f"{prefix}/ajax-api/2.0{base}"]


def whoami():
    identity = current_identity()
    return jsonify(
        {
            "username": identity.username,
            "is_admin": identity.is_admin,
            "key_id": identity.key_id,
            "scope": identity.scope,
        }
    )


# (base path, method, view): the one table of our routes.
ROUTES = [
    ("/mlflow/hokusai/whoami", "GET", whoami),
]


def register(app: Flask, routes=ROUTES) -> None:
    """Add (base path, method, view) routes under both API roots; MLflow's engine lets any
    authenticated caller reach them and the views authorize."""
    rules = []
    for base, method, view in routes:
        for path in paths(base):
            app.add_url_rule(path, endpoint=f"hokusai:{path}", view_func=view, methods=[method])
            rules.append((path, method))
    _mlflow.allow_authenticated(rules)
