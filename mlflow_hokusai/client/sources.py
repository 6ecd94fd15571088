"""Turn the ``model_uri`` a user passes into the source a model version is created from.

``mlflow.register_model`` does this for ``runs:/`` URIs (since MLflow 3 a model logged in a run
is usually a LoggedModel whose files are not under the run's artifacts), but it always talks to
the global tracking URI. ``MlflowClient.create_model_version`` takes an explicit URI but stores a
``runs:/`` source as given, which MLflow 3 then cannot load. So we resolve ``runs:/`` the way
``register_model`` does, with public client calls only. ``models:/name@alias`` and
``models:/name/<version>`` become ``models:/name/<version>`` with that version's run and logged
model, as MLflow 3.17's server does itself (3.15 and 3.16 store them as given and fail on an
alias with a 500); other ``models:/`` URIs are left to the server.
"""

from __future__ import annotations

from urllib.parse import urlparse

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import NOT_FOUND, ErrorCode

MLMODEL = "MLmodel"


def _runs_parts(model_uri: str) -> tuple[str, str]:
    parsed = urlparse(model_uri)
    run_id, _, path = parsed.path.lstrip("/").partition("/")
    if parsed.netloc or not run_id:
        raise MlflowException.invalid_parameter_value(
            f"{model_uri!r} is not a runs:/<run_id>/<path> URI"
        )
    return run_id, path.strip("/")


def _models_parts(model_uri: str) -> tuple[str, str | None, str | None]:
    """(name or model id, version or stage, alias) of a ``models:/`` URI."""
    path = urlparse(model_uri).path.lstrip("/")
    if "@" in path and "/" not in path:
        name, _, alias = path.rpartition("@")
        return name, None, alias
    name, _, version = path.partition("/")
    return name, version or None, None


def resolve_source(client: MlflowClient, model_uri: str) -> tuple[str, str | None, str | None]:
    """(source, run_id, model_id) to create a model version from ``model_uri``."""
    scheme = urlparse(model_uri).scheme
    if scheme == "runs":
        return _resolve_runs_uri(client, model_uri)
    if scheme == "models":
        name, version, alias = _models_parts(model_uri)
        if version is None and alias is None:  # models:/<logged model id>
            return model_uri, None, name
        if alias is not None or version.isdigit():
            found = (
                client.get_model_version_by_alias(name, alias)
                if alias is not None
                else client.get_model_version(name, version)
            )
            return f"models:/{name}/{found.version}", found.run_id or None, found.model_id or None
    return model_uri, None, None


def expected_sources(client: MlflowClient, model_uri: str, source: str) -> set[str]:
    """Every ``source`` string a version registered from ``model_uri`` may carry: the server
    rewrites ``models:/name@alias`` to ``models:/name/<version>``."""
    sources = {source, model_uri}
    if urlparse(model_uri).scheme == "models":
        name, _, alias = _models_parts(model_uri)
        if alias:
            version = client.get_model_version_by_alias(name, alias).version
            sources.add(f"models:/{name}/{version}")
    return sources


def _resolve_runs_uri(client: MlflowClient, model_uri: str):
    run_id, path = _runs_parts(model_uri)
    run = client.get_run(run_id)
    # MLflow 3's log_model: a LoggedModel named ``path`` that this run produced. (Checked first:
    # the client's list_artifacts falls back to such a model's files, so it cannot tell.)
    candidates = []
    page_token = None
    while path:
        page = client.search_logged_models(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"name = '{path}'",
            page_token=page_token,
        )
        candidates += [m for m in page if m.source_run_id == run_id]
        page_token = page.token
        if not page_token:
            break
    if candidates:
        # Several models of one name in a run: the one logged at the latest step, as MLflow does.
        steps = {o.model_id: o.step for o in (run.outputs.model_outputs if run.outputs else [])}
        chosen = max(candidates, key=lambda m: steps.get(m.model_id, -1))
        return f"models:/{chosen.model_id}", run_id, chosen.model_id

    # An MLflow model directory among the run's own artifacts (MLflow 2 style).
    mlmodel = f"{path}/{MLMODEL}" if path else MLMODEL
    if any(info.path == mlmodel for info in client.list_artifacts(run_id, path or None)):
        root = run.info.artifact_uri.rstrip("/")
        return (f"{root}/{path}" if path else root), run_id, None
    raise MlflowException(
        f"No model found at {model_uri}: run {run_id} logged no model named {path!r} "
        f"and has no {MLMODEL} file under {path!r}.",
        error_code=ErrorCode.Name(NOT_FOUND),
    )
