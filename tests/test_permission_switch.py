"""``_mlflow.asgi_patches.run_permission_middleware_only_where_it_acts`` on an app with MLflow's own
FastAPI permission middleware: it replaces exactly that middleware, in place, and sends
through it every request MLflow's tables say it acts on. (Real servers run with the switch in
every other test; the route-coverage suite proves nothing got through unauthenticated.)"""

from __future__ import annotations

import mlflow
import pytest
from fastapi import FastAPI
from packaging.version import Version
from starlette.middleware.base import BaseHTTPMiddleware

from mlflow_hokusai._mlflow import asgi_patches as patches


@pytest.fixture(autouse=True)
def auth_engine_config(tmp_path, monkeypatch):
    """``mlflow.server.auth`` reads its config at import: give it a throwaway database."""
    config = tmp_path / "auth.ini"
    config.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{tmp_path / 'auth.db'}\n"
        "admin_username = admin\nadmin_password = password1234\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(config))


def _app_with_mlflow_middleware() -> FastAPI:
    from mlflow.server.auth import add_fastapi_permission_middleware

    app = FastAPI()

    @app.get("/native-only")
    def native_only():
        return {}

    @app.middleware("http")
    async def another(request, call_next):  # a middleware that is not MLflow's permission one
        return await call_next(request)

    add_fastapi_permission_middleware(app)
    return app


def test_only_mlflow_permission_middleware_is_replaced_in_place():
    app = _app_with_mlflow_middleware()
    before = [(m.cls, (m.kwargs or {}).get("dispatch")) for m in app.user_middleware]
    assert patches.run_permission_middleware_only_where_it_acts(app) is True
    after = app.user_middleware
    assert len(after) == len(before)
    switched = [i for i, m in enumerate(after) if m.cls is patches._OnlyWhereItActs]
    assert len(switched) == 1
    index = switched[0]
    assert before[index][0] is BaseHTTPMiddleware
    assert after[index].kwargs["dispatch"] is before[index][1]
    assert before[index][1].__name__ == "fastapi_permission_middleware"
    for i, (cls, dispatch) in enumerate(before):
        if i != index:
            assert (after[i].cls, (after[i].kwargs or {}).get("dispatch")) == (cls, dispatch)
    # Once replaced there is nothing left to replace.
    assert patches.run_permission_middleware_only_where_it_acts(app) is False


@pytest.mark.parametrize(
    ("method", "path", "acts"),
    [
        ("POST", "/api/2.0/mlflow/runs/log-metric", False),
        ("GET", "/api/2.0/mlflow/runs/get", False),
        ("POST", "/ajax-api/2.0/mlflow/runs/search", False),
        ("POST", "/gateway/some-endpoint/mlflow/invocations", True),
        ("POST", "/v1/traces", True),
        ("GET", "/ajax-api/3.0/jobs/some-job", True),
        ("GET", "/api/2.0/mlflow-artifacts/artifacts/a/b.txt", True),
        ("PUT", "/api/2.0/mlflow-artifacts/artifacts/a/b.txt", True),
        ("GET", "/native-only", True),
    ],
)
def test_requests_mlflow_validates_go_through_it(method, path, acts):
    from mlflow.server import auth

    app = _app_with_mlflow_middleware()
    assert patches.run_permission_middleware_only_where_it_acts(app)
    (entry,) = [m for m in app.user_middleware if m.cls is patches._OnlyWhereItActs]
    scope = {"type": "http", "method": method, "path": path, "root_path": ""}
    expected = auth._find_fastapi_validator(path, method) is not None
    if path == "/native-only":
        expected = hasattr(auth, "_scope_matches_native_route")  # fail-closed exists: 3.17+
    answer = entry.kwargs["acts"](scope)
    assert answer is expected
    if not acts:  # served by Flask, where MLflow's before-request hook authorizes
        assert answer is False
    elif Version(mlflow.__version__) >= Version("3.17"):
        assert answer is True
    assert entry.kwargs["acts"](scope) is answer  # the remembered answer is the same


def _mlflows_app_middleware() -> FastAPI:
    """An app with MLflow's two pass-through middlewares, installed by MLflow's own code."""
    from mlflow.server.fastapi_app import (
        add_fastapi_workspace_middleware,
        add_gateway_timing_middleware,
    )

    app = FastAPI()

    @app.middleware("http")
    async def another(request, call_next):
        return await call_next(request)

    add_fastapi_workspace_middleware(app)
    add_gateway_timing_middleware(app)
    return app


def test_mlflows_pass_through_middlewares_are_replaced_in_place():
    app = _mlflows_app_middleware()
    before = [(m.cls, (m.kwargs or {}).get("dispatch")) for m in app.user_middleware]
    switched = patches.run_pass_through_middleware_only_where_it_acts(app)
    assert sorted(switched) == ["add_fastapi_workspace_middleware", "add_gateway_timing_middleware"]
    after = app.user_middleware
    assert [(m.kwargs or {}).get("dispatch") for m in after] == [d for _, d in before]
    assert [m.cls for m in after].count(patches._OnlyWhereItActs) == 2
    assert [m.cls for m in after].count(BaseHTTPMiddleware) == 1  # the other one is untouched
    assert patches.run_pass_through_middleware_only_where_it_acts(app) == []


def _acts(app, name: str):
    (entry,) = [
        m
        for m in app.user_middleware
        if m.cls is patches._OnlyWhereItActs and name in m.kwargs["dispatch"].__qualname__
    ]
    return entry.kwargs["acts"]


@pytest.mark.parametrize(
    ("path", "headers", "workspaces", "workspace_acts", "gateway_acts"),
    [
        ("/api/2.0/mlflow/runs/log-metric", [], False, False, False),
        ("/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/a.bin", [], False, False, False),
        ("/gateway/chat/mlflow/invocations", [], False, False, True),
        ("/prefix/gateway/chat/mlflow/invocations", [], False, False, True),
        (
            "/api/2.0/mlflow/experiments/search",
            [(b"x-mlflow-workspace", b"team")],
            False,
            True,
            False,
        ),
        ("/api/2.0/mlflow/experiments/search", [], True, True, False),
    ],
)
def test_the_pass_through_middlewares_run_where_they_act(
    monkeypatch, path, headers, workspaces, workspace_acts, gateway_acts
):
    monkeypatch.setenv("MLFLOW_ENABLE_WORKSPACES", "true" if workspaces else "false")
    app = _mlflows_app_middleware()
    patches.run_pass_through_middleware_only_where_it_acts(app)
    scope = {"type": "http", "method": "POST", "path": path, "root_path": "", "headers": headers}
    assert bool(_acts(app, "workspace_context_middleware")(scope)) is workspace_acts
    assert bool(_acts(app, "gateway_timing_middleware")(scope)) is gateway_acts
