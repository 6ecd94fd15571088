"""Resource-limited keys on the Flask side: whether a limited key may create the experiment or
registered model a request names (``resource_limits.may_create``, before MLflow's hooks), and
what a ``can_create`` key creates joins its limits.

After MLflow answered ``experiments/create`` or ``registered-models/create`` with 200 for such
a key, the new experiment's id (or the model's name) is added to the key's stored limits (one
transaction, audited). This worker forgets its cached key at once; another worker that has
not seen the change yet reads the stored limits again before it refuses the key on a resource
it does not name (``auth/resource_limits.py``), so the next request works wherever it lands.
"""

from __future__ import annotations

import logging

from flask import Flask, request

from mlflow_hokusai.auth import resource_limits
from mlflow_hokusai.auth.flask_auth import current_identity
from mlflow_hokusai.auth.scopes import canonical
from mlflow_hokusai.errors import HokusaiError
from mlflow_hokusai.routes.api import mlflow_style_json
from mlflow_hokusai.routes.services import Services

_logger = logging.getLogger(__name__)
CREATED = {
    "/api/2.0/mlflow/experiments/create": ("experiment", lambda body: body.get("experiment_id")),
    "/api/2.0/mlflow/registered-models/create": (
        "registered_model",
        lambda body: (body.get("registered_model") or {}).get("name"),
    ),
}


def install(app: Flask, services: Services) -> None:
    def decide_a_limited_create():
        notes = resource_limits.current_notes()
        if notes is None or notes.create is None:
            return None
        identity = current_identity()
        body = mlflow_style_json() or {}
        message = resource_limits.may_create(identity, notes, body.get("name"))
        if message is None:
            return None
        services.audit.limited_refusal(
            identity, f"{request.method} {request.path}", request.remote_addr
        )
        raise HokusaiError("PERMISSION_DENIED", message)

    # Before MLflow's own hooks: its validator for the create must run knowing the answer.
    app.before_request_funcs.setdefault(None, []).insert(0, decide_a_limited_create)

    @app.after_request
    def add_what_a_limited_key_created(response):
        if request.method != "POST" or response.status_code != 200:
            return response
        created = CREATED.get(canonical(request.path, services.static_prefix))
        if created is None:
            return response
        identity = current_identity()
        if identity is None or not identity.limits.limited or not identity.limits.can_create:
            return response
        kind, value_of = created
        body = response.get_json(silent=True)
        value = value_of(body) if isinstance(body, dict) else None
        if isinstance(value, str) and value:
            services.keys.add_created(identity.key_id, kind, value)
        else:
            _logger.warning(
                "could not tell what %s created for key %s", request.path, identity.key_id
            )
        return response
