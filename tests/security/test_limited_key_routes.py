"""Every route the server serves, called with a key limited to one experiment and one
registered model, on resources outside those limits: 403 every time (searches and listings:
200 with nothing of the outside resources in them), nothing written.

The routes come from the app ``create_app`` builds (``routes`` in test_route_coverage.py),
Flask and FastAPI-native, at ``/`` and under the prefix. Each is called with every parameter
MLflow's validators read (experiment and run ids, model names, logged-model and trace ids,
artifact paths) pointing outside the limits. The tables below classify every route; a route
they do not know fails the test until someone classifies it.
"""

from __future__ import annotations

import json
import re
import time

import mlflow
import pytest
from mlflow import MlflowClient

from mlflow_hokusai.auth.scopes import canonical
from tests.security.raw import send
from tests.security.test_route_coverage import PREFIX

# Searches and listings: 200, filtered to what the key may read (or 403).
SEARCHES = {
    ("GET", "/api/2.0/mlflow/experiments/search"),
    ("POST", "/api/2.0/mlflow/experiments/search"),
    ("POST", "/api/2.0/mlflow/runs/search"),
    ("GET", "/api/2.0/mlflow/registered-models/search"),
    ("GET", "/api/2.0/mlflow/model-versions/search"),
    ("POST", "/api/2.0/mlflow/logged-models/search"),
    ("GET", "/api/2.0/mlflow/traces"),
    ("POST", "/api/3.0/mlflow/traces/search"),
    # MLflow 3.18 scopes these in SQL to the readable experiments (3.17: 403 outside)
    ("GET", "/api/3.0/mlflow/traces/batchGet"),
    ("POST", "/api/3.0/mlflow/traces/batchGetInfos"),
    ("GET", "/api/2.0/mlflow-artifacts/artifacts"),
}
# Routes a limited key may call that touch no experiment, run, model or trace, and why.
FREE = {
    ("GET", "/"): "the UI's page; its data comes through the routes below",
    ("GET", "/static-files/<path:path>"): "the UI's files",
    ("GET", "/health"): "liveness",
    ("GET", "/version"): "the MLflow version",
    ("GET", "/api/3.0/mlflow/server-info"): "what the server supports",
    ("GET", "/api/2.0/mlflow/hokusai/whoami"): "the key itself",
    ("GET", "/api/2.0/mlflow/hokusai/api-keys/list"): "the owner's keys, never a key",
    ("GET", "/api/2.0/mlflow/hokusai/audit/list"): "the events of the owner's keys",
    ("GET", "/hokusai/keys"): "the key page",
    ("GET", "/hokusai/keys.js"): "the key page's script",
    ("GET", "/hokusai/keys.css"): "the key page's style",
    ("GET", "/api/2.0/mlflow/users/current"): "the owner's user record",
    ("POST", "/api/2.0/mlflow/hokusai/token-exchange"): "public: an OIDC token is the credential",
    ("POST", "/api/2.0/mlflow/hokusai/secret-scanning"): "public: GitHub's signature is the "
    "credential; it revokes leaked keys, whoever owns them",
}
# Routes MLflow's engine decides per experiment or model: 403 on an outside resource.
POINT = re.compile(
    r"/api/[23]\.0/mlflow/(experiments|runs|metrics|artifacts/list|logged-models|traces"
    r"|registered-models|model-versions|get-trace-artifact)(/.*)?"
    r"|/api/2\.0/mlflow-artifacts/(artifacts|mpu)/.*|/get-artifact|/model-versions/get-artifact"
    r"|/api/2\.0/mlflow/hokusai/run-artifacts"
)
# Everything else a limited key may not use at all (the gate refuses it first), by family.
REFUSED = {
    r"/api/[23]\.0/mlflow/(gateway|gateway-proxy)(/.*)?|/gateway/.*": "AI gateway",
    r"/api/[23]\.0/mlflow/(scorer|scorers)(/.*)?": "scorers",
    r"/api/3\.0/(mlflow/)?jobs(/.*)?": "background jobs",
    r"/api/3\.0/mlflow/mcp-servers(/.*)?": "MCP server registry",
    r"/api/3\.0/mlflow/skills(/.*)?": "skills registry (MLflow 3.18)",
    r"/api/[23]\.0/mlflow/(users|roles)/.*|/signup": "user and permission administration",
    r"/api/[23]\.0/mlflow/(webhooks|workspaces)(/.*)?": "webhooks and workspaces",
    r"/api/3\.0/mlflow/(issues|label-schemas|review-queues)(/.*)?": "GenAI review features",
    r"/api/3\.0/mlflow/datasets(/.*)?": "evaluation datasets (several experiments each)",
    r"/api/[23]\.0/mlflow/(prompt-optimization|genai|assistant|demo)(/.*)?": "GenAI tools",
    r"/api/[23]\.0/mlflow/(unified-traces|get-online-trace-details|ui-telemetry)(/.*)?": "UI",
    r"/api/3\.0/mlflow/traces/(metrics|calculate-filter-correlation|link-prompts)": "analytics",
    r"/api/2\.0/mlflow/(traces/link-prompts|runs/create-promptlab-run)": "prompt tools",
    r"/api/2\.0/mlflow/(artifacts/presigned.*|upload-artifact)": "presigned and UI uploads",
    r"/api/2\.0/mlflow-artifacts/presigned/.*": "presigned artifact URLs",
    r"/api/2\.0/mlflow/registered-models/rename": "renaming moves a model out of the limits",
    # MLflow 3.15 checks this one on its ajax-api path only (the UI's charts).
    r"/api/2\.0/mlflow/metrics/get-history-bulk-interval": "the UI's charts",
    r"/api/2\.0/?mlflow/experiments/search-datasets": "the UI's dataset search (both spellings)",
    r"/api/2\.0/mlflow/hokusai/(api-keys|federation).*": "key management",
    r"/api/2\.0/mlflow/hokusai/sessions/.*": "people's sign-in sessions (not a key's business)",
    r"/graphql": "GraphQL (the UI's)",
    r"/v1/traces": "OTLP ingestion",
    r"/build/<path:filename>|/favicon\.ico|/metrics": "UI build files, metrics",
}


def _classify(method: str, route: str) -> str:
    key = (method, route)
    if key in SEARCHES:
        return "search"
    if key in FREE:
        return "free"
    for pattern in REFUSED:
        if re.fullmatch(pattern, route):
            return "refused"
    if POINT.fullmatch(route):
        return "point"
    return "unknown"


@pytest.fixture(scope="module")
def outside(server):
    """An owner's resources the limited key must not reach, and the key itself."""
    suffix = time.time_ns()
    owner = f"walk-owner-{suffix}"
    made = server.post(
        "/api/2.0/mlflow/hokusai/api-keys/create", server.admin_key, json={"username": owner}
    )
    owner_key = made.json()["key"]
    out = {"exp": f"walk-out-{suffix}", "model": f"walk-out-model-{suffix}"}
    import os

    os.environ["MLFLOW_TRACKING_TOKEN"] = owner_key
    mlflow.set_tracking_uri(server.url)
    try:
        client = MlflowClient(server.url)
        client.create_experiment(f"walk-in-{suffix}")
        client.create_registered_model(f"walk-in-model-{suffix}")
        out["exp_id"] = client.create_experiment(out["exp"])
        run = client.create_run(out["exp_id"])
        out["run"] = run.info.run_id
        client.log_metric(out["run"], "m", 1.0)
        client.log_param(out["run"], "p", "1")
        client.set_tag(out["run"], "t", "1")
        client.log_text(out["run"], "secret", "notes.txt")
        client.create_registered_model(out["model"], tags={"t": "1"})
        version = client.create_model_version(
            out["model"], f"runs:/{out['run']}/notes.txt", run_id=out["run"]
        )
        client.set_registered_model_alias(out["model"], "champion", version.version)
        logged = client.create_logged_model(out["exp_id"], name="walk-logged")
        out["logged"] = logged.model_id
        mlflow.set_experiment(experiment_id=out["exp_id"])
        with mlflow.start_span("walk-span") as span:
            out["trace"] = span.trace_id
        mlflow.flush_trace_async_logging()
    finally:
        mlflow.set_tracking_uri(None)
        os.environ.pop("MLFLOW_TRACKING_TOKEN", None)
    out["owner_key"] = owner_key
    limited = server.post(
        "/api/2.0/mlflow/hokusai/api-keys/create",
        owner_key,
        json={
            "experiments": [f"walk-in-{suffix}"],
            "registered_models": [f"walk-in-model-{suffix}"],
        },
    )
    assert limited.status_code == 200, limited.text
    out["key"] = limited.json()["key"]
    return out


def _snapshot(server, out) -> dict:
    """What the owner sees of the outside resources (and every experiment and model name)."""
    key = out["owner_key"]

    def get(path, **params):
        answer = server.get(path, key, params=params)
        assert answer.status_code == 200, (path, answer.text)
        return answer.json()

    run = get("/api/2.0/mlflow/runs/get", run_id=out["run"])["run"]
    return {
        "experiment": get("/api/2.0/mlflow/experiments/get", experiment_id=out["exp_id"]),
        "run": {k: run[k] for k in ("info", "data")},
        "model": get("/api/2.0/mlflow/registered-models/get", name=out["model"]),
        "versions": get("/api/2.0/mlflow/model-versions/search", filter=f"name='{out['model']}'"),
        "logged": get(f"/api/2.0/mlflow/logged-models/{out['logged']}"),
        "trace": get(f"/api/3.0/mlflow/traces/{out['trace']}"),
        "artifacts": get("/api/2.0/mlflow/artifacts/list", run_id=out["run"]),
        "experiments": sorted(
            e["name"]
            for e in server.post(
                "/api/2.0/mlflow/experiments/search", key, json={"max_results": 1000}
            ).json()["experiments"]
        ),
        "models": sorted(
            m["name"]
            for m in get("/api/2.0/mlflow/registered-models/search", max_results=1000).get(
                "registered_models", []
            )
        ),
    }


def _fill(path: str, out) -> str:
    artifact = f"{out['exp_id']}/{out['run']}/artifacts/notes.txt"
    path = re.sub(r"<path:(artifact_path|path)>|\{(artifact_path|path):path\}", artifact, path)
    path = re.sub(r"<model_id>|\{model_id\}", out["logged"], path)
    path = re.sub(r"<(request_id|trace_id)>|\{(request_id|trace_id)\}", out["trace"], path)
    path = re.sub(r"<(?:int|float):[^>]+>", "1", path)
    path = re.sub(r"<path:[^>]+>", "dummy/x", path)
    path = re.sub(r"<[^>]+>", "dummy", path)
    path = re.sub(r"\{[^}:]+:path\}", "dummy/x", path)
    return re.sub(r"\{[^}]+\}", "dummy", path)


def _parameters(out) -> dict:
    """Every parameter MLflow's validators look for, naming the outside resources."""
    return {
        "experiment_id": out["exp_id"],
        "experiment_ids": [out["exp_id"]],
        "experiment_name": out["exp"],
        "run_id": out["run"],
        "run_uuid": out["run"],
        "run_ids": [out["run"]],
        "name": out["model"],
        "version": "1",
        "alias": "champion",
        "model_id": out["logged"],
        "trace_id": out["trace"],
        "request_id": out["trace"],
        "trace_ids": [out["trace"]],
        "request_ids": [out["trace"]],
        "key": "walked",
        "value": "walked",
        "path": "notes.txt",
        "source": f"runs:/{out['run']}/notes.txt",
        "metric_key": "m",
        "new_name": "walked",
        "description": "walked",
        "stage": "Archived",
        "tags": [{"key": "walked", "value": "walked"}],
        "max_results": 100,
        "max_timestamp_millis": 2**41,
        "trace": {
            "trace_info": {
                "trace_id": "tr-walked",
                "trace_location": {
                    "type": "MLFLOW_EXPERIMENT",
                    "mlflow_experiment": {"experiment_id": out["exp_id"]},
                },
                "request_time": "2026-12-01T00:00:00Z",
                "state": "OK",
            }
        },
        "locations": [
            {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": out["exp_id"]}}
        ],
    }


def _query(params: dict) -> str:
    from urllib.parse import urlencode

    flat = []
    for name, value in params.items():
        if isinstance(value, list):
            flat += [(name, v) for v in value if not isinstance(v, dict)]
        else:
            flat.append((name, value))
    return urlencode(flat)


def test_a_limited_key_reaches_nothing_outside_its_limits(server, routes, outside):
    before = _snapshot(server, outside)
    params = _parameters(outside)
    body = json.dumps(params).encode()
    headers = [("Authorization", f"Bearer {outside['key']}")]
    markers = (
        outside["exp"],
        outside["model"],
        outside["run"],
        outside["logged"],
        outside["trace"],
    )
    unknown, wrong, counts = [], [], {}
    for route in routes:
        if route["kind"] == "fastapi-websocket":
            continue
        template = route["path"]
        for method in route["methods"]:
            if method in ("HEAD", "OPTIONS"):
                continue
            kind = _classify(method, canonical(template))
            if kind == "unknown":
                unknown.append(f"{method} {template}")
                continue
            counts[kind] = counts.get(kind, 0) + 1
            if kind == "free":
                continue
            path = _fill(template, outside)
            for root in ("", PREFIX):
                target = f"{root}{path}?{_query(params)}"
                reply = send(server.url, method, target, headers=headers, body=body)
                problem = _check(kind, reply, markers)
                if problem:
                    wrong.append(f"{kind} {method} {root}{path} -> {reply.status} {problem}")
    assert not unknown, "classify these routes in the tables above:\n" + "\n".join(unknown)
    assert not wrong, "\n".join(wrong)
    assert _snapshot(server, outside) == before  # nothing written outside the limits
    print(f"\nroutes walked (method, route) by class: {counts}")
    assert counts["point"] > 60 and counts["refused"] > 100 and counts["search"] >= 8


def _check(kind: str, reply, markers) -> str | None:
    """None if the reply is right for a route of this kind, else what is wrong."""
    try:
        error = reply.json()
    except ValueError:
        error = {}
    if kind == "search" and reply.status == 200:
        leaked = [m for m in markers if m in reply.text]
        return f"lists {leaked}" if leaked else None
    if reply.status != 403 or error.get("error_code") != "PERMISSION_DENIED":
        return reply.text[:200]
    message = error.get("message", "")
    if kind == "refused" and "is not a route it may use" not in message:
        return f"refused by the engine, not by the route table: {message[:120]}"
    if "limited" not in message:
        return f"does not say the key is limited: {message[:120]}"
    return None


def test_the_same_key_works_inside_its_limits(server, outside):
    """Positive control: the limited key is not simply refused everywhere."""
    answer = send(
        server.url,
        "GET",
        "/api/2.0/mlflow/experiments/search?max_results=10",
        headers=[("Authorization", f"Bearer {outside['key']}")],
    )
    assert answer.status == 200
    assert [e["name"] for e in answer.json()["experiments"]] == [
        outside["exp"].replace("walk-out-", "walk-in-")
    ]


def test_a_version_of_its_model_cannot_point_at_an_outside_run(server, outside):
    """Registering a version of the key's own model from the outside run (by run id, or by
    the run's artifact URI alone) is refused, so the model's artifact routes cannot be used
    to read the outside run's files."""
    inside_model = outside["model"].replace("walk-out-model-", "walk-in-model-")
    owner = MlflowClient(server.url)
    import os

    os.environ["MLFLOW_TRACKING_TOKEN"] = outside["owner_key"]
    try:
        artifact_uri = owner.get_run(outside["run"]).info.artifact_uri
    finally:
        os.environ.pop("MLFLOW_TRACKING_TOKEN", None)
    headers = [("Authorization", f"Bearer {outside['key']}")]
    for body in (
        {
            "name": inside_model,
            "source": f"runs:/{outside['run']}/notes.txt",
            "run_id": outside["run"],
        },
        {"name": inside_model, "source": f"{artifact_uri}/notes.txt"},
        {"name": inside_model, "source": f"runs:/{outside['run']}/notes.txt"},
        {"name": inside_model, "source": f"models:/{outside['model']}/1"},
    ):
        reply = send(
            server.url,
            "POST",
            "/api/2.0/mlflow/model-versions/create",
            headers=headers,
            body=json.dumps(body).encode(),
        )
        assert reply.status in (400, 403), (body, reply.status, reply.text)
    listed = send(
        server.url,
        "GET",
        f"/api/2.0/mlflow/model-versions/search?filter=name%3D%27{inside_model}%27",
        headers=headers,
    )
    assert listed.status == 200 and listed.json().get("model_versions", []) == []
