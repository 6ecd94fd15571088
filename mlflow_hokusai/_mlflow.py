"""Every MLflow-private name we use, in one place.

A new MLflow release that moves one of these changes this file only. Importing
``mlflow.server.auth`` reads its config at import time, so nothing here imports it at module
level: callers set MLFLOW_AUTH_CONFIG_PATH first (see ``bootstrap``).
"""

from __future__ import annotations

import os

SGI_ENV_VAR = "_MLFLOW_SGI_NAME"  # set by `mlflow server` for its workers
STATIC_PREFIX_ENV_VAR = "_MLFLOW_STATIC_PREFIX"  # set by `mlflow server --static-prefix`
AUTHORIZATION_FUNCTION = "mlflow_hokusai.auth.flask_auth:authenticate"


def server_runner() -> str:
    """'uvicorn' (MLflow's default), 'gunicorn' or 'waitress'."""
    return os.environ.get(SGI_ENV_VAR) or "uvicorn"


def static_prefix() -> str:
    return (os.environ.get(STATIC_PREFIX_ENV_VAR) or "").rstrip("/")


def served_natively(asgi_app):
    """A test ``(path, method) -> bool``: does MLflow's FastAPI app answer this itself rather
    than through the Flask app it mounts at ``/``? Its native routers (e.g. the streaming
    artifact up/download) sit at the root whatever ``--static-prefix`` says (all of them in
    3.15, the artifact router still in 3.17), while their Flask twins under the static prefix
    buffer whole request bodies."""
    from starlette.routing import Match, Mount

    routes = [r for r in getattr(asgi_app, "routes", []) if not isinstance(r, Mount)]

    def test(path: str, method: str) -> bool:
        scope = {"type": "http", "path": path, "method": method, "root_path": ""}
        return any(route.matches(scope)[0] == Match.FULL for route in routes)

    return test


def preload() -> None:
    """Import MLflow's server outside the start-up lock so workers do not import it in turn."""
    import mlflow.server.fastapi_app  # noqa: F401


def build_auth_app():
    """Let MLflow's auth engine build its app; return (flask_app, app_for_runner)."""
    from mlflow.server import app as flask_app
    from mlflow.server.auth import create_app

    return flask_app, create_app(flask_app)


def make_server_info_public() -> None:
    """Server-info is public from MLflow 3.16 on; make it so on older releases too (the gate
    already lets only these exact, clean paths through without a key)."""
    from mlflow.server import auth

    paths = ("/api/3.0/mlflow/server-info", "/ajax-api/3.0/mlflow/server-info")
    # MLflow matches these as prefixes, with and without the static prefix.
    missing = tuple(p for p in paths if not auth.is_unprotected_route(static_prefix() + p))
    if missing:
        auth._UNPROTECTED_PATH_PREFIXES = tuple(auth._UNPROTECTED_PATH_PREFIXES) + missing


def _allow() -> bool:
    return True


def allow_authenticated(rules: list[tuple[str, str]]) -> None:
    """Tell MLflow's fail-closed authorization table that any authenticated user may call
    these (path, method) pairs; our handlers then decide for themselves."""
    from mlflow.server import auth

    for rule in rules:
        auth.BEFORE_REQUEST_VALIDATORS[rule] = _allow


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
    """A function (username, password) -> is_admin, or None when the login is wrong."""

    def check(username: str, password: str):
        if not store.authenticate_user(username, password):
            return None
        return store.get_user(username).is_admin

    return check


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


def native_routes(asgi_app) -> list[tuple[str, frozenset, str]]:
    """(path template, methods, name) of the routes FastAPI serves itself (not through the
    mounted Flask app), in dispatch order. Newer FastAPI wraps included routers in objects
    that expose their routes through ``effective_candidates()``; older ones list them flat."""
    from starlette.routing import Mount

    found = []

    def walk(routes):
        for route in routes:
            if isinstance(route, Mount):
                continue
            candidates = getattr(route, "effective_candidates", None)
            if callable(candidates):
                walk(candidates())
            elif getattr(route, "path", None) is not None:
                methods = getattr(route, "methods", None) or {"GET"}
                found.append((route.path, frozenset(methods), getattr(route, "name", "")))

    walk(getattr(asgi_app, "routes", []))
    return found


def graphql_root_fields() -> set[str]:
    """Every root field of MLflow's GraphQL schema (queries and mutations)."""
    from mlflow.server.graphql.graphql_schema_extensions import schema

    schema = schema.graphql_schema
    fields: set[str] = set()
    for root in (schema.query_type, schema.mutation_type, schema.subscription_type):
        if root is not None:
            fields.update(f"{root.name}.{name}" for name in root.fields)
    return fields


def authorize_like_get_run(rules: list[tuple[str, str]], precheck) -> None:
    """Have MLflow's engine authorize these (path, method) pairs as it does ``GetRun``: read
    permission on the experiment of the request's ``run_id``; admins always. ``precheck()``
    runs first and may raise an ``MlflowException`` (answered as MLflow's JSON error)."""
    from mlflow.server import auth

    def validator():
        precheck()
        return auth.validate_can_read_run()

    for rule in rules:
        auth.BEFORE_REQUEST_VALIDATORS[rule] = validator


def get_run(run_id: str):
    """The run from the server's tracking store; MLflow's 404 MlflowException when unknown."""
    from mlflow.server.handlers import _get_tracking_store

    return _get_tracking_store().get_run(run_id)


def list_run_artifacts():
    """MLflow's ``GET /api/2.0/mlflow/artifacts/list`` handler, run on the current request
    (``run_id``, ``path``, ``page_token`` query parameters): MLflow's own response and errors."""
    from mlflow.server.handlers import _list_artifacts

    return _list_artifacts()


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


# Authorization lookups worth caching: (kind, auth-store method). Each is a pure read keyed by
# its arguments; the user row and role grants change only through the store's write methods.
_CACHED_STORE_READS = (("user", "get_user"), ("grants", "list_grants"))
# Store methods that only read; every other public method is treated as a write and clears the
# cache (a new MLflow method is then safe by default: it invalidates rather than goes stale).
_STORE_READ_PREFIXES = ("get_", "list_", "has_", "is_", "authenticate_", "user_has_")


def cache_authorization_lookups(cache) -> None:
    """Put ``cache`` (a ``LookupCache``) in front of the per-request lookups of MLflow's auth
    engine, in this worker: the user row and role grants (auth store ``get_user``,
    ``list_grants``) and the run that run routes load only to learn its experiment
    (``_fetch_or_none(get_run, run_id)``; a run never changes experiment). Every write method
    of the auth store clears the cache after it runs."""
    import inspect

    from mlflow.server import auth

    store = auth.store
    for kind, name in _CACHED_STORE_READS:
        if hasattr(store, name):  # list_grants is new in MLflow 3.17
            setattr(store, name, cache.cached(kind, getattr(store, name)))
    for name, member in inspect.getmembers(type(store), inspect.isfunction):
        if not name.startswith("_") and not name.startswith(_STORE_READ_PREFIXES):
            setattr(store, name, cache.invalidating(getattr(store, name)))

    fetch_or_none = getattr(auth, "_fetch_or_none", None)
    if fetch_or_none is None:  # MLflow < 3.17 loads the run inline: not cached there
        return

    def cached_fetch_or_none(fetch, resource_id):
        if getattr(fetch, "__name__", "") != "get_run":
            return fetch_or_none(fetch, resource_id)
        return cache.get(("run", resource_id), lambda: fetch_or_none(fetch, resource_id),
                         keep=lambda run: run is not None)

    auth._fetch_or_none = cached_fetch_or_none


# Response fields MLflow's run redaction may withhold from non-admins (proto names and their
# JSON camelCase forms). A body without any of them has nothing to withhold.
_RUN_MODEL_LINK_MARKERS = tuple(
    f'"{name}"'.encode()
    for name in ("model_inputs", "model_outputs", "model_id", "modelInputs", "modelOutputs",
                 "modelId")
)


def skip_redundant_request_work(max_paths: int = 4096) -> None:
    """Two per-request costs of MLflow's auth engine that repeat the same answer:

    - its FastAPI permission middleware tests every request path against every native FastAPI
      route (about 0.4 ms a request) to learn whether FastAPI or Flask serves it; the answer
      depends only on the request type, method and path, so it is remembered (LRU, bounded);
    - for a non-admin, the run redaction after ``GetRun``/``SearchRuns`` parses the whole
      response into protobuf to look for logged-model links; a body that does not contain
      any link field name is passed through without the parse (same result).
    Either patch is skipped if this MLflow version does not have the function it wraps."""
    import threading
    from collections import OrderedDict

    from mlflow.server import auth

    matches = getattr(auth, "_scope_matches_native_route", None)
    if matches is not None:
        memo: OrderedDict = OrderedDict()
        lock = threading.Lock()

        def remembered(native_routes, scope):
            key = (id(native_routes), scope.get("type"), scope.get("method"),
                   scope.get("root_path", ""), scope.get("path"))
            with lock:
                if key in memo:
                    memo.move_to_end(key)
                    return memo[key]
            answer = matches(native_routes, scope)
            with lock:
                memo[key] = answer
                if len(memo) > max_paths:
                    memo.popitem(last=False)
            return answer

        auth._scope_matches_native_route = remembered

    redactors = {getattr(auth, name, None)
                 for name in ("redact_get_run_model_links", "redact_search_runs_model_links")}
    redactors.discard(None)

    def only_with_links(redact):
        def redact_if_linked(resp):
            data = resp.get_data()
            if any(marker in data for marker in _RUN_MODEL_LINK_MARKERS):
                return redact(resp)
            return None

        return redact_if_linked

    for table in (getattr(auth, "AFTER_REQUEST_HANDLERS", {}),
                  getattr(auth, "PARAMETERIZED_AFTER_REQUEST_HANDLERS", {})):
        for rule, handler in list(table.items()):
            if handler in redactors:
                table[rule] = only_with_links(handler)


def use_artifact_repository(scheme: str, repository_class) -> None:
    """Serve ``scheme`` URIs (e.g. ``--artifacts-destination s3://…``) with
    ``repository_class`` in this process."""
    from mlflow.store.artifact.artifact_repository_registry import _artifact_repository_registry

    _artifact_repository_registry.register(scheme, repository_class)
