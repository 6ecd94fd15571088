"""Changing MLflow's FastAPI app: its middleware and its native artifact routes.

Two kinds of patch, each on a name ``targets.py`` lists and start-up checks:

- MLflow's ``BaseHTTPMiddleware``s wrap every request in task groups even where they only pass
  it on; ``_OnlyWhereItActs`` puts each behind a plain ASGI switch that sends through it every
  request it may act on (a superset, chosen by MLflow's own tables where it has them).
- MLflow's native artifact download spools to a temporary file; ``stream_artifact_downloads``
  serves the same paths ahead of it and, after MLflow's own checks, streams from S3.

All of them must run before the app's middleware stack is built (its first request).
"""

from __future__ import annotations

import posixpath

from mlflow_hokusai._mlflow import targets
from mlflow_hokusai._mlflow.patches import _Memo


def run_permission_middleware_only_where_it_acts(asgi_app, max_paths: int = 4096) -> bool:
    """MLflow's FastAPI permission middleware is a Starlette ``BaseHTTPMiddleware`` and wraps
    every request, though for a request Flask serves (no FastAPI validator, not a native
    route) all it does is pass it on; the wrapping alone costs several per cent of a small
    request (docs/performance.md). Put it behind a plain ASGI switch, at the same place in
    the stack: requests it acts on (by MLflow's own ``_find_fastapi_validator`` and native
    route match, remembered per method and path) go through it unchanged; the others go
    straight to the next middleware, as its ``call_next`` would send them.

    Returns whether the switch is in (False when this MLflow lacks a name it needs, or the
    app is not the FastAPI app MLflow built, or its middleware stack is already built)."""
    from starlette.middleware import Middleware
    from starlette.middleware.base import BaseHTTPMiddleware
    from starlette.routing import Mount

    find_validator = targets.lookup(targets.AUTH, "_find_fastapi_validator")
    installer = targets.lookup(targets.AUTH, "add_fastapi_permission_middleware")
    middleware = getattr(asgi_app, "user_middleware", None)
    if find_validator is None or installer is None or middleware is None:
        return False
    if getattr(asgi_app, "middleware_stack", None) is not None:
        return False
    local = installer.__qualname__ + ".<locals>."

    def is_permission_middleware(entry) -> bool:
        dispatch = (getattr(entry, "kwargs", None) or {}).get("dispatch")
        return (
            getattr(entry, "cls", None) is BaseHTTPMiddleware
            and getattr(dispatch, "__module__", None) == targets.AUTH
            and getattr(dispatch, "__qualname__", "").startswith(local)
        )

    found = [i for i, entry in enumerate(middleware) if is_permission_middleware(entry)]
    if len(found) != 1:
        return False
    native = [route for route in asgi_app.routes if not isinstance(route, Mount)]
    matches_native = targets.lookup(targets.AUTH, "_scope_matches_native_route")
    memo = _Memo(max_paths)

    def acts(scope) -> bool:
        from mlflow.server import auth

        def answer() -> bool:
            return find_validator(scope["path"], scope["method"]) is not None or bool(
                # native routes without a validator: MLflow's fail-closed rule may refuse them
                matches_native is not None and auth._scope_matches_native_route(native, scope)
            )

        key = (scope.get("method"), scope.get("root_path", ""), scope.get("path"))
        return memo.get(key, answer)

    entry = middleware[found[0]]
    middleware[found[0]] = Middleware(
        _OnlyWhereItActs, dispatch=entry.kwargs["dispatch"], acts=acts
    )
    return True


# MLflow's functions that install its pass-through middlewares, one each.
PASS_THROUGH_MIDDLEWARES = ("add_fastapi_workspace_middleware", "add_gateway_timing_middleware")


def run_pass_through_middleware_only_where_it_acts(asgi_app) -> list[str]:
    """MLflow's FastAPI app wraps every request in two more ``BaseHTTPMiddleware``s that, for
    most requests, only pass it on: the workspace context (it acts when workspaces are enabled,
    or a request names one, which it refuses when they are not) and the gateway timing (it acts
    on gateway paths). Each wrapping costs a task group per request and per body message (a
    256 MiB upload arrives in about 1,000), and each such task group's cancel formats a task's
    repr in anyio. Put them behind the same switch as the permission middleware, acting on a
    superset of what each acts on: a request either might act on goes through it unchanged.

    Returns the names of the middlewares switched (an empty list when the app is not the
    FastAPI app MLflow built, or its middleware stack is already built)."""
    from starlette.middleware import Middleware
    from starlette.middleware.base import BaseHTTPMiddleware

    middleware = getattr(asgi_app, "user_middleware", None)
    if middleware is None or getattr(asgi_app, "middleware_stack", None) is not None:
        return []
    workspace_header = b"x-mlflow-workspace"
    workspaces = targets.lookup(targets.ENV, "MLFLOW_ENABLE_WORKSPACES")

    def names_workspace(scope) -> bool:
        return workspaces.get() or any(
            name == workspace_header for name, _ in scope.get("headers", ())
        )

    def on_gateway_path(scope) -> bool:
        return "/gateway/" in scope.get("path", "")

    switches = (names_workspace if workspaces is not None else None, on_gateway_path)
    switched = []
    for installer_name, acts in zip(PASS_THROUGH_MIDDLEWARES, switches, strict=True):
        installer = targets.lookup(targets.FASTAPI_APP, installer_name)
        if installer is None or acts is None:
            continue
        local = installer.__qualname__ + ".<locals>."
        for index, entry in enumerate(middleware):
            dispatch = (getattr(entry, "kwargs", None) or {}).get("dispatch")
            if (
                getattr(entry, "cls", None) is BaseHTTPMiddleware
                and getattr(dispatch, "__module__", None) == targets.FASTAPI_APP
                and getattr(dispatch, "__qualname__", "").startswith(local)
            ):
                middleware[index] = Middleware(_OnlyWhereItActs, dispatch=dispatch, acts=acts)
                switched.append(installer_name)
                break
    return switched


class _OnlyWhereItActs:
    """``BaseHTTPMiddleware(app, dispatch)`` for the requests ``acts(scope)`` names; every
    other request goes to ``app`` directly (``run_permission_middleware_only_where_it_acts``)."""

    def __init__(self, app, dispatch, acts):
        from starlette.middleware.base import BaseHTTPMiddleware

        self.app = app
        self.acts = acts
        self.middleware = BaseHTTPMiddleware(app, dispatch=dispatch)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and not self.acts(scope):
            return await self.app(scope, receive, send)
        return await self.middleware(scope, receive, send)


def stream_artifact_downloads(asgi_app, open_stream, answers: tuple = ()) -> bool:
    """Serve MLflow's native artifact download paths ahead of MLflow's handler, which fetches
    the whole artifact to a temporary file before it sends a byte. The route runs MLflow's own
    checks (serving on, a safe path, workspace scoping), then asks ``open_stream(repository,
    path)`` for a ``DownloadStream``; when it gives None (another repository, no such object)
    or any of it fails, MLflow's handler answers the request, unchanged; an exception of a
    class in ``answers`` is left to the app's exception handlers instead. MLflow's permission
    middleware authorizes these paths before either runs.

    Returns whether the route is in (False when this MLflow lacks a name it needs)."""
    from fastapi.routing import APIRoute
    from starlette.responses import StreamingResponse

    helpers = {
        name: targets.lookup(targets.ARTIFACT_ROUTER, name) for name in targets.DOWNLOAD_HELPERS
    }
    is_safe = targets.lookup("mlflow.utils.uri", "validate_path_is_safe")
    mime_type = targets.lookup("mlflow.utils.mime_type_utils", "_guess_mime_type")
    router = getattr(asgi_app, "router", None)
    if None in helpers.values() or None in (is_safe, mime_type, router):
        return False
    mlflow_download = helpers["download_artifact"]
    paths = [  # MLflow's own router, as its app may hold included routers, not their routes
        route.path
        for route in helpers["artifact_router"].routes
        if getattr(route, "endpoint", None) is mlflow_download and "GET" in route.methods
    ]
    if not paths:
        return False

    async def download_artifact(artifact_path: str):
        stream = None
        if helpers["_is_serving_proxied_artifacts"]():
            try:
                path = helpers["_get_workspace_scoped_path"](is_safe(artifact_path))
                stream = await open_stream(helpers["_get_artifact_repo"](), path)
            except answers:
                raise
            except Exception:  # noqa: BLE001 - MLflow's handler meets it again and answers it
                stream = None
        if stream is None:
            return await mlflow_download(artifact_path)
        filename = posixpath.basename(path)
        headers = {
            "Content-Type": mime_type(filename),
            "Content-Disposition": helpers["_content_disposition"](filename),
            "X-Content-Type-Options": "nosniff",
            "Content-Length": str(stream.size),
        }
        return StreamingResponse(stream.chunks, headers=headers)

    for path in paths:
        router.routes.insert(
            0, APIRoute(path, download_artifact, methods=["GET"], include_in_schema=False)
        )
    return True
