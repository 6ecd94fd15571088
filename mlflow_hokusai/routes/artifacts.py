"""The artifact listing Hokusai users know, on top of MLflow's proxied artifact API.

``GET …/mlflow-artifacts/artifacts?run_id=RUN[&path=SUB]`` (the integration guide's example, on
both ``/api/2.0`` and ``/ajax-api/2.0``) lists a run's artifacts. MLflow's own handler for that
URL takes ``path`` relative to the artifact *destination* root and authorizes by the experiment
id at its head, so a request carrying ``run_id`` is sent, before MLflow's hooks see it, to our
route, which MLflow's engine authorizes exactly like ``GetRun`` (read on the run's experiment,
admins always) and which answers with MLflow's run artifact listing.

MLflow lists the destination root (no ``path``) as one folder per experiment id, whoever asks;
we keep that listing, and any listing whose path names no experiment, for admins.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, quote, unquote

from flask import Flask, jsonify, redirect, request
from mlflow.exceptions import MlflowException

from mlflow_hokusai import _mlflow
from mlflow_hokusai.auth.flask_auth import current_identity
from mlflow_hokusai.errors import flask_error
from mlflow_hokusai.routes.services import Services

RUN_LISTING = "/mlflow/hokusai/run-artifacts"
_LISTINGS = ("/api/2.0/mlflow-artifacts/artifacts", "/ajax-api/2.0/mlflow-artifacts/artifacts")
_DRIVE_OR_CONTROL = re.compile(r"^[A-Za-z]:|[\x00-\x1f\x7f]")


def escapes_root(path: str) -> bool:
    """True when ``path`` could leave the directory it is relative to: ``..`` segments,
    absolute or drive paths, backslashes, control characters, in any percent-encoding depth."""
    seen = path
    for _ in range(4):
        if (
            "\\" in seen
            or seen.startswith("/")
            or _DRIVE_OR_CONTROL.search(seen)
            or ".." in seen.split("/")
        ):
            return True
        decoded = unquote(seen)
        if decoded == seen:
            return False
        seen = decoded
    return True  # still decoding after several rounds: nobody needs that


def check_listing_request():
    """The run to list; 400 for a missing ``run_id`` or a ``path`` leaving the run's root, 404
    for an unknown run, raised as ``MlflowException`` so MLflow's hooks and handlers answer
    them as JSON."""
    run_id = request.args.get("run_id")
    if not run_id:
        raise MlflowException.invalid_parameter_value("run_id must name a run.")
    path = request.args.get("path")
    if path is not None and escapes_root(path):
        raise MlflowException.invalid_parameter_value(
            "path must be relative to the run's artifact root: no '..', no leading '/', "
            "no backslashes."
        )
    return _mlflow.get_run(run_id)


def list_run_artifacts():
    # MLflow's engine has authorized (non-admins through the precheck and GetRun's rule);
    # admins skip validators, so check again here (an MlflowException becomes MLflow's JSON
    # in the one error path, routes/errors.py).
    run = check_listing_request()
    models = _mlflow.logged_models_of_run(run)
    if not models:
        return _mlflow.list_run_artifacts()
    root = _mlflow.list_run_root(run.info.run_id)
    directories = _model_directories(models, root)
    path = (request.args.get("path") or "").strip("/")
    head, _, rest = path.partition("/")
    if head in directories:
        return _logged_model_listing(head, directories[head], rest)
    if path:
        return _mlflow.list_run_artifacts()
    root.setdefault("files", []).extend(
        {"path": name, "is_dir": True, "logged_model_id": model.model_id}
        for name, model in directories.items()
    )
    return jsonify(root)


def _model_directories(models: list, root: dict) -> dict:
    """Each MLflow 3 logged model of a run as a directory of the run's listing: named after
    the model (``log_model(model, name="model")`` -> ``model``), or after its id when the
    run's artifact root already has an entry of that name (the artifact keeps its path) or an
    older logged model of the run took the name."""
    taken = {entry["path"].split("/", 1)[0] for entry in root.get("files", [])}
    directories = {}
    for model in models:
        name = model.name if model.name and model.name not in taken else model.model_id
        taken.add(name)
        directories[name] = model
    return directories


def _logged_model_listing(name: str, model, rest: str):
    """``path=model[/SUB]``: the logged model's files, with paths as the run's listing gives
    them (``model/MLmodel``); ``path=model/FILE`` redirects to the file's download through the
    proxied artifact API (``…/mlflow-artifacts/artifacts/<experiment>/models/<id>/…``), which
    MLflow authorizes by the same experiment."""
    parent, _, leaf = rest.rpartition("/")
    if leaf:
        above = _mlflow.list_logged_model_artifacts(model.model_id, parent or None)
        wanted = f"{parent}/{leaf}" if parent else leaf
        if any(f["path"] == wanted and not f.get("is_dir") for f in above.get("files", [])):
            return _download_redirect(model, wanted)
    answer = _mlflow.list_logged_model_artifacts(model.model_id, rest or None)
    for entry in answer.get("files", []):
        entry["path"] = f"{name}/{entry['path']}"
    answer["logged_model_id"] = model.model_id
    return jsonify(answer)


def _download_redirect(model, relative: str):
    location = model.artifact_location
    if not location.startswith("mlflow-artifacts:"):
        raise MlflowException.invalid_parameter_value(
            f"This model's files are not served through this server: download them from "
            f"{location}/{relative}."
        )
    destination = location.split(":", 1)[1].lstrip("/")
    # Relative to the URL the client used (…/mlflow-artifacts/artifacts?run_id=…), whichever
    # prefix it came through: …/mlflow-artifacts/artifacts/<destination>/<file>.
    return redirect(f"artifacts/{quote(destination)}/{quote(relative)}", code=307)


class RunListingDispatch:
    """WSGI middleware on MLflow's Flask app (it sees Flask's traffic under uvicorn and
    gunicorn alike): a listing that carries ``run_id`` goes to our route."""

    def __init__(self, wsgi_app, targets: dict[str, str]):
        self.wsgi_app = wsgi_app
        self.targets = targets

    def __call__(self, environ, start_response):
        target = self.targets.get(environ.get("PATH_INFO", ""))
        if target and environ.get("REQUEST_METHOD") in ("GET", "HEAD"):
            query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
            if "run_id" in query:
                environ["PATH_INFO"] = target
        return self.wsgi_app(environ, start_response)


def _experiment_of(path: str | None) -> str | None:
    head = unquote(unquote(path or "")).strip("/").split("/", 1)[0]
    return head if head.isdigit() else None


def _root_listing_rule(listing_paths: frozenset[str]):
    """A before-request hook, run after MLflow's (which authenticated and authorized by the
    experiment the path names, or by the default permission when it names none)."""

    def admins_list_the_root():
        if request.method not in ("GET", "HEAD") or request.path not in listing_paths:
            return None
        if _experiment_of(request.args.get("path")):
            return None
        identity = current_identity()
        if identity is not None and identity.is_admin:
            return None
        return flask_error(
            "PERMISSION_DENIED",
            "Listing the artifact root is for admins: pass run_id=RUN or a path starting "
            "with an experiment id.",
        )

    return admins_list_the_root


def _unrouted_artifact_rule(artifact_apis: tuple[str, ...]):
    """A before-request hook, run before MLflow's: a request under the artifact API that no
    route matches (``presigned//etc/passwd``, a wrong method) gets Flask's answer (its 308 to
    the merged-slash path, 404 or 405), as MLflow's other unknown paths do. MLflow 3.15 and
    3.16 authorize such a request by reading ``request.view_args``, which is None then: a
    500."""

    def answer_unrouted_artifact_requests():
        error = request.routing_exception
        if error is not None and request.path.startswith(artifact_apis):
            raise error

    return answer_unrouted_artifact_requests


def install(app: Flask, services: Services) -> None:
    """Add the ``?run_id=`` listing route and the root-listing rule. Call after MLflow's auth
    engine is set up (its ``before_request`` must authenticate first)."""
    prefix = services.static_prefix
    rest, ajax = services.api_paths(RUN_LISTING)
    for path in (rest, ajax):
        app.add_url_rule(
            path, endpoint=f"hokusai:{path}", view_func=list_run_artifacts, methods=["GET"]
        )
    rules = [(path, method) for path in (rest, ajax) for method in ("GET", "HEAD")]
    _mlflow.patches.authorize_like_get_run(rules, check_listing_request)
    apis = ("/api/2.0/mlflow-artifacts/", "/ajax-api/2.0/mlflow-artifacts/")
    # First of all before-request hooks (MLflow's included): see the hook's docstring.
    app.before_request_funcs.setdefault(None, []).insert(
        0, _unrouted_artifact_rule(apis + tuple(prefix + a for a in apis))
    )
    app.before_request(_root_listing_rule(frozenset(prefix + p for p in _LISTINGS)))
    app.wsgi_app = RunListingDispatch(
        app.wsgi_app, {prefix + _LISTINGS[0]: rest, prefix + _LISTINGS[1]: ajax}
    )
