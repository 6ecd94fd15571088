"""``models:/`` sources of new model versions on MLflow before 3.17.

MLflow 3.17's CreateModelVersion handler resolves ``models:/name@alias``, stages and ``latest``
to ``models:/name/<version>`` and answers a missing model with a 404. Before 3.17 the handler
hands the URI to the store, which reads only ``models:/name/<version>`` and turns every other
form, and a missing version, into a 500 (which MLflow's client then retries for minutes). On
those releases this hook, after MLflow's authorization, answers them first: 404 for a missing
version (MLflow's own error), 400 for a form that release cannot register from. It also asks,
as 3.17 does, that a source in the server's own artifacts comes with its ``run_id``.
"""

from __future__ import annotations

from urllib.parse import urlparse

from flask import Flask, request

from mlflow_hokusai import _mlflow
from mlflow_hokusai.auth import resource_limits
from mlflow_hokusai.auth.flask_auth import current_identity
from mlflow_hokusai.errors import HokusaiError
from mlflow_hokusai.routes.api import mlflow_style_json
from mlflow_hokusai.routes.services import Services

CREATE = "/mlflow/model-versions/create"


def check_source(source: object, run_id: object = None) -> None:
    """Raise when this MLflow cannot register from ``source`` (HokusaiError 400, or MLflow's
    404 for a missing version); the one error path answers.

    A source inside the tracking server's own artifacts (``runs:/…``, ``mlflow-artifacts:/…``)
    must come with the ``run_id`` whose artifacts hold it, as MLflow 3.17 requires: MLflow
    3.15 accepts it alone, and the version's artifact routes (authorized by the registered
    model) would then serve another experiment's files."""
    scheme = urlparse(source).scheme if isinstance(source, str) else ""
    if scheme in ("runs", "mlflow-artifacts") and not run_id:
        raise HokusaiError(
            "INVALID_PARAMETER_VALUE",
            f"Invalid model version source {source!r}: a source in this server's artifacts "
            "needs the 'run_id' of the run that holds it (as MLflow 3.17 requires).",
        )
    if scheme != "models":
        return
    parts = urlparse(source).path.lstrip("/").split("/")
    if len(parts) == 1 and "@" not in parts[0]:
        return  # models:/<logged model id>
    if len(parts) == 2 and parts[0] and parts[1].isdigit():
        _readable_source_model(parts[0])
        _mlflow.registry_store().get_model_version(parts[0], parts[1])  # 404 if missing
        return
    raise HokusaiError(
        "INVALID_PARAMETER_VALUE",
        f"MLflow {_mlflow.mlflow_version()} registers a model version from "
        f"models:/<name>/<version> only, not from {source!r}: look the version up (an alias, "
        "a stage) and pass that (mlflow_hokusai.ModelRegistry does), or upgrade the server to "
        "MLflow 3.17.",
    )


def _readable_source_model(name: str) -> None:
    """The caller must be able to read the registered model a new version copies (MLflow 3.17
    checks that; 3.15 does not), within its key's resource limits."""
    identity = current_identity()
    if identity is None or identity.is_admin:
        return
    limits = identity.limits
    if _mlflow.can_read_registered_model(name, identity.username) and (
        not limits.limited or limits.model_ceiling(name) is not None
    ):
        return
    raise HokusaiError(
        "PERMISSION_DENIED",
        resource_limits.denial_message(identity)
        if limits.limited
        else "Permission denied: you may not read the registered model of this source.",
    )


def install(app: Flask, services: Services) -> None:
    """Register the hook (after MLflow's auth engine's) where this MLflow needs it."""
    if _mlflow.resolves_model_version_sources():
        return
    paths = frozenset(services.api_paths(CREATE))

    def check_model_source():
        if request.method == "POST" and request.path in paths:
            body = mlflow_style_json()
            if body:
                check_source(body.get("source"), body.get("run_id"))

    app.before_request(check_model_source)
