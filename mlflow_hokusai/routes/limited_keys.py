"""Resource-limited keys on the Flask side: what a ``can_create`` key creates joins its limits.

After MLflow answered ``experiments/create`` or ``registered-models/create`` with 200 for such
a key, the new experiment's id (or the model's name) is added to the key's stored limits (one
transaction, audited). This worker forgets its cached key at once; another worker that has
not seen the change yet reads the stored limits again before it refuses the key on a resource
it does not name (``auth/resource_limits.py``), so the next request works wherever it lands.
"""

from __future__ import annotations

import logging

from flask import Flask, request

from mlflow_hokusai.auth.flask_auth import current_identity
from mlflow_hokusai.auth.scopes import canonical
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
