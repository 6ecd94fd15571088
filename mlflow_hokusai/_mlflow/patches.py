"""Changing MLflow: every patch we apply to MLflow's server, each on a name ``targets.py``
lists and start-up checks (so a renamed target is an error or a warning, never a patch that
silently does nothing).

The patches either register our routes in MLflow's own tables (its fail-closed authorization
table, its unprotected-path list, its artifact repository registry) or put a cache or a
shortcut in front of per-request work of its auth engine whose answer does not change (see
docs/performance.md). Each optional patch is skipped when ``targets.check`` has reported its
target missing.
"""

from __future__ import annotations

import functools
import threading

from cachetools import LRUCache

from mlflow_hokusai._mlflow import targets
from mlflow_hokusai._mlflow.accessors import static_prefix


class _Memo:
    """A bounded, thread-safe LRU memo for answers that never go stale (a path's route, a
    run's experiment). ``remember(value)`` gives what to keep, or None to keep nothing."""

    def __init__(self, maxsize: int):
        self.cache = LRUCache(maxsize)
        self.lock = threading.Lock()

    def get(self, key, compute, remember=lambda value: value):
        with self.lock:
            try:
                return self.cache[key]
            except KeyError:
                pass
        value = compute()
        kept = remember(value)
        if kept is not None:
            with self.lock:
                self.cache[key] = kept
        return value


def make_server_info_public() -> None:
    """Server-info is public from MLflow 3.16 on; make it so on older releases too (the gate
    already lets only these exact, clean paths through without a key)."""
    make_public(["/api/3.0/mlflow/server-info", "/ajax-api/3.0/mlflow/server-info"])


def make_public(paths: list[str]) -> None:
    """Have MLflow's auth engine serve these paths (given without ``--static-prefix``; MLflow
    adds it, and matches them as prefixes) without authentication. The gate lets only the
    exact, clean paths through without a key."""
    from mlflow.server import auth

    is_unprotected = targets.lookup(targets.AUTH, "is_unprotected_route")
    targets.lookup(targets.AUTH, "_UNPROTECTED_PATH_PREFIXES")
    missing = tuple(p for p in paths if not is_unprotected(static_prefix() + p))
    if missing:
        auth._UNPROTECTED_PATH_PREFIXES = tuple(auth._UNPROTECTED_PATH_PREFIXES) + missing


def _allow() -> bool:
    return True


def allow_authenticated(rules: list[tuple[str, str]]) -> None:
    """Tell MLflow's fail-closed authorization table that any authenticated user may call
    these (path, method) pairs; our handlers then decide for themselves."""
    validators = targets.lookup(targets.AUTH, "BEFORE_REQUEST_VALIDATORS")
    for rule in rules:
        validators[rule] = _allow


def _deny() -> bool:
    return False


def admins_only(rules: list[tuple[str, str]]) -> None:
    """Have MLflow's engine refuse these (path, method) pairs to every non-admin (admins skip
    validators), as MLflow 3.17's fail-closed rule does for routes it has no validator for,
    so older releases behave the same."""
    validators = targets.lookup(targets.AUTH, "BEFORE_REQUEST_VALIDATORS")
    for rule in rules:
        validators.setdefault(rule, _deny)


def authorize_like_get_run(rules: list[tuple[str, str]], precheck) -> None:
    """Have MLflow's engine authorize these (path, method) pairs as it does ``GetRun``: read
    permission on the experiment of the request's ``run_id``; admins always. ``precheck()``
    runs first and may raise an ``MlflowException`` (answered as MLflow's JSON error)."""
    validators = targets.lookup(targets.AUTH, "BEFORE_REQUEST_VALIDATORS")
    validate_can_read_run = targets.lookup(targets.AUTH, "validate_can_read_run")

    def validator():
        precheck()
        return validate_can_read_run()

    for rule in rules:
        validators[rule] = validator


def check_api_routes_like_their_ajax_twins() -> list[tuple[str, str]]:
    """Where MLflow's table leaves an ``/api/…`` route unchecked (validator None) but checks
    its ``/ajax-api/…`` twin (the same handler), check the ``/api/…`` route the same way.
    MLflow 3.15 does this to ``GET /api/2.0/mlflow/metrics/get-history-bulk-interval``: any
    user could read any run's metric history there. Returns the routes it fixed."""
    validators = targets.lookup(targets.AUTH, "BEFORE_REQUEST_VALIDATORS")
    fixed = []
    for (path, method), validator in list(validators.items()):
        if validator is not None or "/api/" not in path:
            continue
        twin = validators.get((path.replace("/api/", "/ajax-api/", 1), method))
        if twin is not None:
            validators[(path, method)] = twin
            fixed.append((path, method))
    return fixed


def after_user_write(method: str, callback) -> None:
    """Call ``callback(username)`` after MLflow's auth store method ``method``
    (``create_user`` or ``delete_user``) succeeded, in this worker (MLflow's REST
    ``users/create`` and ``users/delete`` go through them)."""
    store = targets.lookup(targets.AUTH, "store")
    targets.lookup(targets.AUTH_STORE, f"SqlAlchemyStore.{method}")
    original = getattr(store, method)

    def then_callback(username, *args, **kwargs):
        result = original(username, *args, **kwargs)
        callback(username)
        return result

    setattr(store, method, then_callback)


def use_artifact_repository(scheme: str, repository_class) -> None:
    """Serve ``scheme`` URIs (e.g. ``--artifacts-destination s3://…``) with
    ``repository_class`` in this process."""
    register = targets.lookup(
        "mlflow.store.artifact.artifact_repository_registry",
        "_artifact_repository_registry.register",
    )
    register(scheme, repository_class)


# Authorization lookups worth caching: (kind, auth-store method). Each is a pure read keyed by
# its arguments; the user row and role grants change only through the store's write methods.
_CACHED_STORE_READS = (("user", "get_user"), ("grants", "list_grants"))
# Store methods that only read; every other public method is treated as a write and clears the
# cache (a new MLflow method is then safe by default: it invalidates rather than goes stale).
_STORE_READ_PREFIXES = ("get_", "list_", "has_", "is_", "authenticate_", "user_has_")


def admin_flag_from_identity(current_identity) -> None:
    """MLflow's ``sender_is_admin`` learns whether the caller is an admin by loading the user
    row again (auth store ``get_user``) on every request, though the request's identity
    (``current_identity()``, computed once by the gate from the same users table) already
    carries the flag. Answer from the identity; a request without one (none passed the gate)
    asks MLflow's own function."""
    from mlflow.server import auth

    original = targets.lookup(targets.AUTH, "sender_is_admin")

    def sender_is_admin():
        identity = current_identity()
        if identity is None:
            return original()
        return identity.is_admin

    auth.sender_is_admin = sender_is_admin


def cache_authorization_lookups(cache, max_runs: int = 10_000) -> None:
    """Put ``cache`` (the worker's ``LookupCache``) in front of the per-request lookups of
    MLflow's auth engine: the user row and role grants (auth store ``get_user``,
    ``list_grants``). Every write method of the auth store clears the cache after it runs.

    Run routes load the whole run (metrics, params, tags) only to learn its experiment
    (``_fetch_or_none(get_run, run_id)`` reads ``run.info.experiment_id`` and nothing else;
    ``tests/test_mlflow_targets.py`` checks that on the MLflow under test). A run never
    changes experiment, so that answer is remembered for the worker's life (LRU, bounded), as
    a run carrying only its info: no key or permission change can make it stale."""
    import inspect

    from mlflow.entities import Run
    from mlflow.server import auth

    store = targets.lookup(targets.AUTH, "store")
    for kind, name in _CACHED_STORE_READS:
        if targets.lookup(targets.AUTH_STORE, f"SqlAlchemyStore.{name}") is not None:
            setattr(store, name, cache.cached(kind, getattr(store, name)))
    for name, _member in inspect.getmembers(type(store), inspect.isfunction):
        if not name.startswith("_") and not name.startswith(_STORE_READ_PREFIXES):
            setattr(store, name, cache.invalidating(getattr(store, name)))

    fetch_or_none = targets.lookup(targets.AUTH, "_fetch_or_none")
    if fetch_or_none is None:  # MLflow < 3.17 loads the run inline: not cached there
        return

    runs = _Memo(max_runs)  # run id -> Run(info only); a missing run is asked again

    def info_only(run):
        return None if run is None else Run(run_info=run.info, run_data=None)

    def cached_fetch_or_none(fetch, resource_id):
        if getattr(fetch, "__name__", "") != "get_run":
            return fetch_or_none(fetch, resource_id)
        return runs.get(resource_id, lambda: fetch_or_none(fetch, resource_id), info_only)

    auth._fetch_or_none = cached_fetch_or_none


# Response fields MLflow's run redaction may withhold from non-admins (proto names and their
# JSON camelCase forms). A body without any of them has nothing to withhold.
_RUN_MODEL_LINK_MARKERS = tuple(
    f'"{name}"'.encode()
    for name in (
        "model_inputs",
        "model_outputs",
        "model_id",
        "modelInputs",
        "modelOutputs",
        "modelId",
    )
)


def skip_redundant_request_work(max_paths: int = 4096) -> None:
    """Two per-request costs of MLflow's auth engine that repeat the same answer:

    - its FastAPI permission middleware tests every request path against every native FastAPI
      route (about 0.4 ms a request) to learn whether FastAPI or Flask serves it; the answer
      depends only on the request type, method and path, so it is remembered (LRU, bounded);
    - for a non-admin, the run redaction after ``GetRun``/``SearchRuns`` parses the whole
      response into protobuf to look for logged-model links; a body that does not contain
      any link field name is passed through without the parse (same result).
    Either patch is skipped if this MLflow lacks the name it wraps (``targets.check`` says so)."""
    from mlflow.server import auth

    matches = targets.lookup(targets.AUTH, "_scope_matches_native_route")
    if matches is not None:
        memo = _Memo(max_paths)

        def remembered(native_routes, scope):
            key = (
                id(native_routes),
                scope.get("type"),
                scope.get("method"),
                scope.get("root_path", ""),
                scope.get("path"),
            )
            return memo.get(key, lambda: matches(native_routes, scope))

        auth._scope_matches_native_route = remembered

    redactors = {
        targets.lookup(targets.AUTH, name)
        for name in ("redact_get_run_model_links", "redact_search_runs_model_links")
    }
    redactors.discard(None)

    def only_with_links(redact):
        def redact_if_linked(resp):
            data = resp.get_data()
            if any(marker in data for marker in _RUN_MODEL_LINK_MARKERS):
                return redact(resp)
            return None

        return redact_if_linked

    tables = (
        targets.lookup(targets.AUTH, "AFTER_REQUEST_HANDLERS"),
        targets.lookup(targets.AUTH, "PARAMETERIZED_AFTER_REQUEST_HANDLERS"),
    )
    for table in tables:
        for rule, handler in list((table or {}).items()):
            if handler in redactors:
                table[rule] = only_with_links(handler)


def _forbidden(response) -> bool:
    return getattr(response, "status_code", None) == 403


def decide_refusals_on_fresh_data(flask_app, decided, decided_async, fresh=None) -> list[str]:
    """Where MLflow's engine refuses a request (403) or leaves a resource out of an answer,
    have it decide again on fresh data when the first decision used a cached lookup:
    ``decided(decide, refused)`` / ``decided_async`` (``auth/cache.py``) do that. Wrapped:

    - its Flask ``before_request`` hook (every validator table, proxied artifacts) and the
      validators of FastAPI-native routes: a 403 is decided again;
    - its Flask ``after_request`` hook (response filters and redactions): when it changed the
      response, it runs again on the original response; the same for FastAPI response filters;
    - ``filter_experiment_ids`` (``runs/search`` drops unreadable experiments inside its
      handler): a shorter list is decided again;
    - MLflow 3.18's request scopes (a search's SQL filter of readable ids, built before the
      handler): built under ``fresh()`` (every lookup loaded anew), since what they leave out
      cannot be seen afterwards.
    Nothing is run twice that wrote anything: validators, filters and redactions only read, and
    the after-request handlers that write (the creator's grant) leave the response unchanged.
    (The handler tables are left as they are: MLflow tells filters apart by identity.)
    Returns what it wrapped (``create_app`` logs what it could not)."""
    steps = (
        ("before_request", lambda: _redecide_before_request(flask_app, decided)),
        ("after_request", lambda: _redecide_after_request(flask_app, decided)),
        ("filter_experiment_ids", lambda: _redecide_experiment_filter(decided)),
        ("REQUEST_SCOPE_HANDLERS", lambda: _build_request_scopes_fresh(fresh)),
        (
            "_find_fastapi_validator",
            lambda: _wrap_what_it_finds(
                "_find_fastapi_validator", _redecided_validator(decided_async)
            ),
        ),
        (
            "_find_fastapi_response_filter",
            lambda: _wrap_what_it_finds(
                "_find_fastapi_response_filter", _redecided_response_filter(decided)
            ),
        ),
    )
    return [name for name, wrap in steps if wrap()]


def _replace_hook(hooks: list, original, replacement) -> bool:
    """Put ``replacement`` where ``original`` is in a Flask hook list (False: not there)."""
    if original not in hooks:
        return False
    hooks[hooks.index(original)] = functools.wraps(original)(replacement)
    return True


def _redecide_before_request(flask_app, decided) -> bool:
    """A 403 of MLflow's Flask ``before_request`` hook is decided again on fresh data."""
    before = targets.lookup(targets.AUTH, "_before_request")

    def before_request():
        return decided(before, _forbidden)

    return _replace_hook(flask_app.before_request_funcs.get(None, []), before, before_request)


def _redecide_after_request(flask_app, decided) -> bool:
    """When MLflow's Flask ``after_request`` hook changed a response, it runs again, on fresh
    data, on the response as the view made it."""
    after = targets.lookup(targets.AUTH, "_after_request")

    def after_request(resp):
        if resp.status_code >= 400 or resp.is_streamed or resp.direct_passthrough:
            return after(resp)
        original = resp.get_data()
        runs = []

        def run():
            if runs:  # again, on the response as the view made it
                resp.set_data(original)
            runs.append(True)
            return after(resp)

        return decided(run, lambda out: out is not resp or out.get_data() != original)

    return _replace_hook(flask_app.after_request_funcs.get(None, []), after, after_request)


def _redecide_experiment_filter(decided) -> bool:
    """A shorter list from ``filter_experiment_ids`` is decided again on fresh data."""
    from mlflow.server import auth

    filter_ids = targets.lookup(targets.AUTH, "filter_experiment_ids")
    if filter_ids is None:
        return False

    @functools.wraps(filter_ids)
    def filter_experiment_ids(experiment_ids):
        return decided(
            lambda: filter_ids(experiment_ids), lambda kept: len(kept) < len(experiment_ids)
        )

    auth.filter_experiment_ids = filter_experiment_ids
    return True


def _build_request_scopes_fresh(fresh) -> bool:
    """MLflow 3.18's request scopes are built under ``fresh()`` (every lookup loaded anew)."""
    scopes = targets.lookup(targets.AUTH, "REQUEST_SCOPE_HANDLERS")
    if scopes is None or fresh is None:
        return False

    def on_fresh_data(scoper):
        @functools.wraps(scoper)
        def scope(*args, **kwargs):
            with fresh():
                return scoper(*args, **kwargs)

        return scope

    for rule, scoper in list(scopes.items()):
        scopes[rule] = on_fresh_data(scoper)
    return True


def _wrap_what_it_finds(finder_name: str, wrap) -> bool:
    """Replace MLflow's ``finder_name`` (a function that finds a validator or a filter for a
    request, or None) by one that gives ``wrap(found)`` instead of what it found."""
    from mlflow.server import auth

    find = targets.lookup(targets.AUTH, finder_name)
    if find is None:
        return False

    @functools.wraps(find)
    def find_wrapped(*args, **kwargs):
        found = find(*args, **kwargs)
        return None if found is None else wrap(found)

    setattr(auth, finder_name, find_wrapped)
    return True


def _redecided_validator(decided_async):
    """A FastAPI validator whose refusal is decided again on fresh data."""

    def wrap(validator):
        async def validate(*args, **kwargs):
            return await decided_async(
                lambda: validator(*args, **kwargs), lambda allowed: not allowed
            )

        return validate

    return wrap


def _redecided_response_filter(decided):
    """A FastAPI response filter that, when it changed the body, is decided again."""

    def wrap(response_filter):
        def filter_response(username, body, request):
            return decided(
                lambda: response_filter(username, body, request), lambda out: out != body
            )

        return filter_response

    return wrap


def serve_head_as_get(flask_app) -> None:
    """Have MLflow's Flask app, its auth engine included, answer a ``HEAD`` exactly as the
    ``GET`` of the same URL: same status and headers, no body.

    MLflow's engine keys its validator tables on (path, method) with no ``HEAD`` entries, so
    its fail-closed rule refused every non-admin ``HEAD`` (403); and its parameter readers and
    handlers take a non-``GET`` for a request with a JSON body (400 ``Unsupported HTTP method
    'HEAD'``, even for admins). Authorizing ``HEAD`` by the ``GET`` validators alone would
    still hit the second. So the app sees a ``GET``: validators, handler and response filters
    are the GET's, and a ``HEAD`` gets nothing its ``GET`` would not. The body is closed unread.
    (The gate's read-scope and resource-limit tables already take ``HEAD`` as ``GET``.)"""
    inner = flask_app.wsgi_app

    def wsgi_app(environ, start_response):
        if environ.get("REQUEST_METHOD") != "HEAD":
            return inner(environ, start_response)
        started = []

        def start(status, headers, exc_info=None):
            started.append(status)
            return start_response(status, headers, exc_info)

        body = inner({**environ, "REQUEST_METHOD": "GET"}, start)
        try:
            if not started:  # a WSGI app may call start_response with its first chunk
                next(iter(body), None)
        finally:
            if hasattr(body, "close"):
                body.close()
        return []

    flask_app.wsgi_app = wsgi_app
