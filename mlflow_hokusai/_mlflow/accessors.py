"""Reading from MLflow: every MLflow-private name we read or call (not change), in one place.

A new MLflow release that moves one of these changes this package only; ``targets.py`` lists
each private name, and start-up checks them. Importing ``mlflow.server.auth`` reads its config
at import time, so nothing here imports it at module level: callers set
MLFLOW_AUTH_CONFIG_PATH first (see ``bootstrap``).
"""

from __future__ import annotations

import functools
import os

from mlflow_hokusai._mlflow import targets

AUTHORIZATION_FUNCTION = "mlflow_hokusai.auth.flask_auth:authorize"


def mlflow_version() -> str:
    import mlflow

    return mlflow.__version__


def resolves_model_version_sources() -> bool:
    """Whether MLflow's CreateModelVersion handler resolves ``models:/name@alias``, stages and
    ``latest`` itself and answers a missing model with a 404 (MLflow 3.17 on); before, it hands
    the URI to the store, which reads only ``models:/name/<version>``."""
    from packaging.version import Version

    return Version(mlflow_version()).release[:2] >= (3, 17)


def server_runner() -> str:
    """'uvicorn' (MLflow's default), 'gunicorn' or 'waitress': what `mlflow server` tells its
    workers in MLflow's ``_MLFLOW_SGI_NAME``."""
    sgi_name = targets.lookup(targets.ENV, "_MLFLOW_SGI_NAME")
    return os.environ.get(sgi_name.name) or "uvicorn"


def static_prefix() -> str:
    """The ``--static-prefix`` `mlflow server` was given (MLflow's ``STATIC_PREFIX_ENV_VAR``),
    without a trailing slash; empty without one."""
    variable = targets.lookup(targets.HANDLERS, "STATIC_PREFIX_ENV_VAR")
    return (os.environ.get(variable) or "").rstrip("/")


@functools.cache
def permission_order() -> dict[str, int]:
    """MLflow's order of the permissions a user can hold (``PERMISSION_PRIORITY``, from
    ``NO_PERMISSIONS`` 0 to ``MANAGE``), without ``DENY``: name -> rank."""
    priority = targets.lookup(targets.PERMISSIONS, "PERMISSION_PRIORITY")
    return {name: rank for name, rank in priority.items() if rank >= 0}


def preload() -> None:
    """Import MLflow's server outside the start-up lock so workers do not import it in turn."""
    import mlflow.server.fastapi_app  # noqa: F401


def build_auth_app():
    """Let MLflow's auth engine build its app; return (flask_app, app_for_runner)."""
    from mlflow.server import app as flask_app
    from mlflow.server.auth import create_app

    return flask_app, create_app(flask_app)


def user_store(database_uri: str):
    """MLflow's auth user store on ``database_uri`` (runs MLflow's auth migrations)."""
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore()
    store.init_db(database_uri)
    return store


def running_user_store():
    """The user store the running auth app was initialised with."""
    from mlflow.server import auth

    return auth.store


def registry_store():
    """The model registry store the server's handlers write to (same instance, same workspace
    context), for read-only look-ups through its public store API."""
    from mlflow.server.handlers import _get_model_registry_store

    return _get_model_registry_store()


def password_checker(store):
    """A function (username, password) -> is_admin, or None when the login is wrong.

    It takes the same time whether or not the user exists, so a failed login does not tell
    which user names exist: both paths run the same two queries (the existence check, then
    MLflow's own ``authenticate_user``, which finds no row for an unknown user), and for an
    unknown user the password is checked against a decoy hash made the way MLflow makes them
    (werkzeug's default)."""
    import secrets

    from werkzeug.security import check_password_hash, generate_password_hash

    decoy: list[str] = []

    def check(username: str, password: str):
        if store.has_user(username):
            if not store.authenticate_user(username, password):
                return None
            return store.get_user(username).is_admin
        store.authenticate_user(username, password)  # the same row look-up, which finds nothing
        if not decoy:
            decoy.append(generate_password_hash(secrets.token_urlsafe(16)))
        check_password_hash(decoy[0], password)
        return None

    return check


def can_read_registered_model(name: str, username: str) -> bool:
    """Whether ``username`` may read registered model (or prompt) ``name`` by MLflow's rules.
    MLflow 3.17 answers with its own check (grants, roles, workspaces, the default
    permission) for the current request's user; older releases by the user's grant on the
    model, else the default permission. Anything that cannot be resolved: False."""
    from mlflow.server import auth
    from mlflow.server.auth.permissions import get_permission

    try:
        permission_of = getattr(auth, "_get_registered_model_or_prompt_permission", None)
        if permission_of is not None:
            return bool(permission_of(name).can_read)
        try:
            granted = auth.store.get_registered_model_permission(name, username).permission
        except Exception:  # no grant on this model for this user
            granted = auth.auth_config.default_permission
        return bool(get_permission(granted).can_read)
    except Exception:  # gone meanwhile, or not resolvable: do not reveal it
        return False


def rpc_routes() -> list[tuple[str, str, str]]:
    """(Flask rule, method, RPC name) for every protobuf-described MLflow endpoint, e.g.
    ('/api/2.0/mlflow/runs/search', 'POST', 'mlflow.SearchRuns'). RPC names come from MLflow's
    public protos, so they outlive handler renames."""
    from mlflow.server.handlers import get_endpoints

    routes = []
    for path, handler, methods in get_endpoints(lambda request_class: request_class):
        descriptor = getattr(handler, "DESCRIPTOR", None)
        if descriptor is not None:
            routes.extend((path, method, descriptor.full_name) for method in methods)
    return routes


class NativeRoutes:
    """The routes MLflow's FastAPI app serves itself (not through the Flask app it mounts at
    ``/``), in dispatch order: the one answer to "is this request served natively, and by
    which route?". Its native routers (e.g. the streaming artifact up/download) sit at the
    root whatever ``--static-prefix`` says (all of them in 3.15, the artifact router still in
    3.17), while their Flask twins under the static prefix buffer whole request bodies.

    Newer FastAPI wraps included routers in objects that expose their routes through
    ``effective_candidates()``; older ones list them flat."""

    def __init__(self, asgi_app=None):
        from starlette.routing import Mount, compile_path

        self.routes: list[tuple[str, frozenset, str]] = []  # (template, methods, name)
        self._patterns = []

        def walk(routes):
            for route in routes:
                if isinstance(route, Mount):
                    continue
                candidates = getattr(route, "effective_candidates", None)
                if callable(candidates):
                    walk(candidates())
                elif getattr(route, "path", None) is not None:
                    methods = frozenset(getattr(route, "methods", None) or {"GET"})
                    self.routes.append((route.path, methods, getattr(route, "name", "")))
                    self._patterns.append((compile_path(route.path)[0], methods, route.path))

        walk(getattr(asgi_app, "routes", []) if asgi_app is not None else [])

    def match(self, path: str, method: str) -> str | None:
        """The template of the native route that serves (method, path), or None."""
        method = "GET" if method == "HEAD" else method
        for regex, methods, template in self._patterns:
            if method in methods and regex.match(path):
                return template
        return None

    def methods_of(self, path: str) -> frozenset:
        """Every method a native route serves ``path`` with (empty: none matches it)."""
        return frozenset(
            m for regex, methods, _ in self._patterns if regex.match(path) for m in methods
        )


def graphql_root_fields() -> set[str]:
    """Every root field of MLflow's GraphQL schema (queries and mutations)."""
    from mlflow.server.graphql.graphql_schema_extensions import schema

    schema = schema.graphql_schema
    fields: set[str] = set()
    for root in (schema.query_type, schema.mutation_type, schema.subscription_type):
        if root is not None:
            fields.update(f"{root.name}.{name}" for name in root.fields)
    return fields


def get_run(run_id: str):
    """The run from the server's tracking store; MLflow's 404 MlflowException when unknown."""
    from mlflow.server.handlers import _get_tracking_store

    return _get_tracking_store().get_run(run_id)


def experiment_name(experiment_id: str) -> str:
    """The name of an experiment in the server's tracking store (MLflow's 404 when unknown)."""
    from mlflow.server.handlers import _get_tracking_store

    return _get_tracking_store().get_experiment(experiment_id).name


def experiment_id_by_name(name: str) -> str | None:
    """The id of the live experiment called ``name`` in the server's tracking store, or
    None."""
    from mlflow.server.handlers import _get_tracking_store

    experiment = _get_tracking_store().get_experiment_by_name(name)
    return None if experiment is None else str(experiment.experiment_id)


def list_run_artifacts():
    """MLflow's ``GET /api/2.0/mlflow/artifacts/list`` handler, run on the current request
    (``run_id``, ``path``, ``page_token`` query parameters): MLflow's own response and errors."""
    from mlflow.server.handlers import _list_artifacts

    return _list_artifacts()


def list_run_root(run_id: str) -> dict:
    """MLflow's listing of the root of ``run_id``'s artifact directory (``list_artifacts_impl``,
    what ``GET …/artifacts/list?run_id=`` answers): ``{"root_uri", "files"}``."""
    import json

    from mlflow.protos.service_pb2 import ListArtifacts
    from mlflow.server.handlers import list_artifacts_impl
    from mlflow.utils.proto_json_utils import message_to_json

    return json.loads(message_to_json(list_artifacts_impl(ListArtifacts(run_id=run_id))))


def logged_models_of_run(run) -> list:
    """The logged models whose source run is ``run`` (MLflow 3's ``log_model`` stores a model
    outside the run's artifact directory), oldest first."""
    from mlflow.server.handlers import _get_tracking_store

    store = _get_tracking_store()
    found, token = [], None
    while True:
        page = store.search_logged_models(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"source_run_id = '{run.info.run_id}'",
            max_results=100,
            page_token=token,
        )
        found.extend(page)
        token = page.token
        if not token:
            break
    return sorted(found, key=lambda model: (model.creation_timestamp or 0, model.model_id))


def list_logged_model_artifacts(model_id: str, path: str | None) -> dict:
    """MLflow's listing of a logged model's artifacts under ``path`` (its
    ``logged-models/<id>/artifacts/directories`` handler): ``{"root_uri", "files"}``."""
    import json

    from mlflow.server.handlers import _list_logged_model_artifacts_impl

    return json.loads(_list_logged_model_artifacts_impl(model_id, path).get_data())


def rest_call(tracking_uri: str, token: str, endpoint: str, method: str, **kwargs) -> dict:
    """One JSON call to an MLflow server with a bearer token, through MLflow's own REST
    helper (TLS settings, MLflow's error exceptions with the server's message). Two quick
    retries, not MLflow's minutes of back-off: a person is waiting at the command line."""
    from mlflow.utils.rest_utils import MlflowHostCreds, http_request, verify_rest_response

    kwargs.setdefault("max_retries", 2)
    kwargs.setdefault("backoff_factor", 0.5)
    kwargs.setdefault("timeout", 60)
    response = http_request(MlflowHostCreds(tracking_uri, token=token), endpoint, method, **kwargs)
    response = verify_rest_response(response, endpoint)
    return response.json() if response.content else {}


# -- S3 (MLflow's S3 artifact repository; ``artifacts/s3_streaming.py`` builds on it) --------
def s3_repository_bases() -> tuple[type, type]:
    """The base classes of a streaming S3 repository: MLflow's ``S3ArtifactRepository`` and
    ``StreamUploadMixin`` (a repository with it is handed the request body as it arrives)."""
    return (
        targets.lookup(targets.S3_REPO, "S3ArtifactRepository"),
        targets.lookup(targets.ARTIFACT_REPO, "StreamUploadMixin"),
    )


def s3_bucket_and_key(repository) -> tuple[str, str]:
    """The bucket and key prefix of MLflow's S3 repository's artifact URI."""
    return repository.parse_s3_compliant_uri(repository.artifact_uri)


def s3_client(repository):
    """The boto3 client MLflow's S3 repository uses (its endpoint, credentials, retries)."""
    return repository._get_s3_client()


def s3_upload_extra_args(repository) -> dict:
    """The ExtraArgs MLflow's ``upload_file`` would send: bucket owner and MLflow's
    MLFLOW_S3_UPLOAD_EXTRA_ARGS settings."""
    extra = dict(repository._bucket_owner_params)
    extra.update(repository.get_s3_file_upload_extra_args() or {})
    return extra


def s3_bucket_owner_args(repository) -> dict:
    """The ``ExpectedBucketOwner`` MLflow's S3 repository sends with each call (or nothing)."""
    return dict(repository._bucket_owner_params)
