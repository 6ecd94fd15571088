"""``models:/`` sources of new model versions on MLflow before 3.17.

MLflow 3.17's CreateModelVersion handler resolves ``models:/name@alias``, stages and ``latest``
to ``models:/name/<version>`` and answers a missing model with a 404. Before 3.17 the handler
hands the URI to the store, which reads only ``models:/name/<version>`` and turns every other
form, and a missing version, into a 500 (which MLflow's client then retries for minutes). On
those releases this hook, after MLflow's authorization, answers them first: 404 for a missing
version (MLflow's own error), 400 for a form that release cannot register from.
"""

from __future__ import annotations

from urllib.parse import urlparse

import mlflow
from flask import Flask, request
from packaging.version import Version

from mlflow_hokusai import _mlflow
from mlflow_hokusai.errors import HokusaiError
from mlflow_hokusai.routes.api import mlflow_style_json
from mlflow_hokusai.routes.services import Services

CREATE = "/mlflow/model-versions/create"


def check_source(source: object) -> None:
    """Raise when this MLflow cannot register from ``source`` (HokusaiError 400, or MLflow's
    404 for a missing version); the one error path answers."""
    if not isinstance(source, str) or urlparse(source).scheme != "models":
        return
    parts = urlparse(source).path.lstrip("/").split("/")
    if len(parts) == 1 and "@" not in parts[0]:
        return  # models:/<logged model id>
    if len(parts) == 2 and parts[0] and parts[1].isdigit():
        _mlflow.registry_store().get_model_version(parts[0], parts[1])  # 404 if missing
        return
    raise HokusaiError(
        "INVALID_PARAMETER_VALUE",
        f"MLflow {mlflow.__version__} registers a model version from models:/<name>/<version> "
        f"only, not from {source!r}: look the version up (an alias, a stage) and pass that "
        "(mlflow_hokusai.ModelRegistry does), or upgrade the server to MLflow 3.17.",
    )


def install(app: Flask, services: Services) -> None:
    """Register the hook (after MLflow's auth engine's) where this MLflow needs it."""
    if Version(mlflow.__version__).release[:2] >= (3, 17):
        return
    paths = frozenset(services.api_paths(CREATE))

    def check_model_source():
        if request.method == "POST" and request.path in paths:
            body = mlflow_style_json()
            if body:
                check_source(body.get("source"))

    app.before_request(check_model_source)
