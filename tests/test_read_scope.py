"""Read-only keys against a real server: the seed's read snippets work, every write snippet is
refused with 403 and writes nothing; and every route of the app is classified, fail closed."""

import json
import subprocess
import sys
import textwrap
import time

import mlflow
import numpy as np
import pytest
import requests
from mlflow.exceptions import MlflowException
from packaging.version import Version
from sklearn.linear_model import LogisticRegression

API = "/api/2.0/mlflow/hokusai/api-keys"


@pytest.fixture(scope="module")
def world(server, tracking_module):
    """A user with a write key who logged and registered a model, and a read key of theirs."""
    suffix = time.time_ns()
    made = server.post(f"{API}/create", server.admin_key, json={"username": "scoped-owner"})
    write_key = made.json()["key"]
    read_key = server.post(f"{API}/create", write_key, json={"scope": "read"}).json()["key"]
    X = np.random.RandomState(1).rand(30, 3)
    y = (X[:, 1] > 0.5).astype(int)
    with tracking_module(server, write_key) as mlflow:
        experiment_id = mlflow.create_experiment(f"scoped-{suffix}")
        with mlflow.start_run(experiment_id=experiment_id) as run:
            mlflow.log_metric("accuracy", 0.9)
            mlflow.sklearn.log_model(LogisticRegression().fit(X, y), name="model")
        name = f"scoped-model-{suffix}"
        mlflow.register_model(f"runs:/{run.info.run_id}/model", name)
    return {
        "read": read_key,
        "write": write_key,
        "experiment": f"scoped-{suffix}",
        "experiment_id": experiment_id,
        "run_id": run.info.run_id,
        "model": name,
        "X": X,
    }


@pytest.fixture(scope="module")
def tracking_module():
    """Like the ``tracking`` fixture, for module-scoped setup."""
    import contextlib
    import os

    @contextlib.contextmanager
    def use(srv, key, prefix=""):
        saved = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}
        for name in saved:
            del os.environ[name]
        os.environ["MLFLOW_TRACKING_URI"] = srv.url + prefix
        os.environ["MLFLOW_TRACKING_TOKEN"] = key
        import mlflow

        mlflow.set_tracking_uri(srv.url + prefix)
        try:
            yield mlflow
        finally:
            mlflow.set_tracking_uri(None)
            for name in [k for k in os.environ if k.startswith("MLFLOW_")]:
                del os.environ[name]
            os.environ.update(saved)

    return use


@pytest.mark.parametrize("prefix", ["", "/api/mlflow"])
def test_read_key_runs_the_seed_read_snippets(server, world, tracking, prefix):
    with tracking(server, world["read"], prefix) as mlflow:
        names = [e.name for e in mlflow.search_experiments()]
        assert world["experiment"] in names
        experiment = mlflow.get_experiment_by_name(world["experiment"])
        assert experiment.experiment_id == world["experiment_id"]
        client = mlflow.tracking.MlflowClient()
        models = client.search_registered_models(filter_string=f"name='{world['model']}'")
        assert [m.name for m in models] == [world["model"]]
        # POST reads: runs/search, model-versions and logged-models searches.
        runs = mlflow.search_runs(experiment_ids=[world["experiment_id"]], output_format="list")
        assert [r.info.run_id for r in runs] == [world["run_id"]]
        assert client.search_model_versions(f"name='{world['model']}'")[0].version == "1"
        assert mlflow.search_logged_models(
            experiment_ids=[world["experiment_id"]], output_format="list"
        )
        model = mlflow.pyfunc.load_model(f"models:/{world['model']}/1")
        assert len(model.predict(world["X"][:3])) == 3
        assert client.list_artifacts(world["run_id"]) is not None


def test_read_key_is_refused_every_write_snippet(server, world, tracking, tmp_path):
    artifact = tmp_path / "notes.txt"
    artifact.write_text("should never be stored")
    with tracking(server, world["read"]) as mlflow:
        client = mlflow.tracking.MlflowClient()
        snippets = {
            "create_experiment": lambda: mlflow.create_experiment("read-key-experiment"),
            "start_run": lambda: mlflow.start_run(experiment_id=world["experiment_id"]),
            "log_metric": lambda: client.log_metric(world["run_id"], "sneaky", 1.0),
            "register_model": lambda: mlflow.register_model(
                f"runs:/{world['run_id']}/model", "read-key-model"
            ),
            "set_model_version_tag": lambda: client.set_model_version_tag(
                world["model"], "1", "stage", "hacked"
            ),
            "log_artifact": lambda: client.log_artifact(world["run_id"], str(artifact)),
        }
        for name, snippet in snippets.items():
            with pytest.raises(Exception) as refused:
                snippet()
            text = str(refused.value)
            assert "403" in text or "PERMISSION_DENIED" in text, (name, text)
            assert "read-only" in text, (name, text)
        mlflow.end_run()
    with tracking(server, server.admin_key) as mlflow:
        client = mlflow.tracking.MlflowClient()
        assert mlflow.get_experiment_by_name("read-key-experiment") is None
        run = client.get_run(world["run_id"])
        assert "sneaky" not in run.data.metrics
        assert len(mlflow.search_runs([world["experiment_id"]], output_format="list")) == 1
        with pytest.raises(MlflowException):
            client.get_registered_model("read-key-model")
        assert "stage" not in client.get_model_version(world["model"], "1").tags
        assert "notes.txt" not in [a.path for a in client.list_artifacts(world["run_id"])]


@pytest.mark.parametrize(
    "method, path, body, allowed",
    [
        ("POST", "/ajax-api/2.0/mlflow/runs/search", {"experiment_ids": ["0"]}, True),
        ("POST", "/ajax-api/2.0/mlflow/runs/create", {"experiment_id": "0"}, False),
        (
            "POST",
            "/api/3.0/mlflow/traces/search",
            {
                "locations": [
                    {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": "EXP"}}
                ]
            },
            True,
        ),
        ("POST", "/api/2.0/mlflow/logged-models/search", {"experiment_ids": ["EXP"]}, True),
        ("GET", "/api/2.0/mlflow/model-versions/search", None, True),
        ("POST", "/graphql", {"query": 'query { test(inputString: "x") { output } }'}, True),
        ("POST", "/ajax-api/3.0/jobs/search", {}, True),
        ("POST", "/v1/traces", {}, False),
        ("POST", "/gateway/some-endpoint/mlflow/invocations", {}, False),
        ("PUT", "/api/2.0/mlflow-artifacts/artifacts/0/x.txt", None, False),
        ("DELETE", "/ajax-api/2.0/mlflow-artifacts/artifacts/0/x.txt", None, False),
        ("POST", "/api/2.0/mlflow/users/create", {"username": "x", "password": "y" * 12}, False),
        # a path no route serves is a 404 for every key (tests/test_unknown_paths.py)
        ("POST", "/api/mlflow/api/2.0/mlflow/experiments/create", {"name": "x"}, False),
    ],
)
def test_read_key_on_every_kind_of_route(server, world, method, path, body, allowed):
    body = json.loads(json.dumps(body).replace('"EXP"', json.dumps(world["experiment_id"])))
    response = requests.request(
        method,
        server.url + path,
        json=body,
        timeout=30,
        headers={"Authorization": f"Bearer {world['read']}"},
    )
    if allowed:
        assert response.status_code not in (401, 403), response.text
    else:
        assert response.status_code == 403, response.text
        assert response.json()["error_code"] == "PERMISSION_DENIED"
        assert "read-only" in response.json()["message"]


def test_read_key_downloads_artifacts_through_the_proxy(server, world):
    read = {"Authorization": f"Bearer {world['read']}"}
    listing = requests.get(
        f"{server.url}/api/2.0/mlflow/artifacts/list?run_id={world['run_id']}",
        headers=read,
        timeout=30,
    )
    assert listing.status_code == 200, listing.text


_TABLE_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    os.environ["HOKUSAI_DATABASE_URI"] = "sqlite:///" + os.path.join(sys.argv[1], "auth.db")
    os.environ["HOKUSAI_BOOTSTRAP_DIR"] = sys.argv[1]
    os.environ["_MLFLOW_SGI_NAME"] = "uvicorn"
    from mlflow_hokusai.app import create_app
    from mlflow.server import app as flask_app

    gate = create_app()
    # A route MLflow might add tomorrow, registered before the table is first used.
    flask_app.add_url_rule("/api/2.0/mlflow/brand-new/get", "brand_new", lambda: "",
                           methods=["GET"])
    scope = gate.read_scope
    probes = [
        ["GET", "/api/2.0/mlflow/brand-new/get"], ["GET", "/api/9.9/unknown"],
        ["POST", "/api/2.0/mlflow/runs/search"], ["HEAD", "/api/2.0/mlflow/experiments/get"],
        ["GET", "/api/2.0/mlflow-artifacts/artifacts/1/a/b.txt"],
        ["PUT", "/api/2.0/mlflow-artifacts/artifacts/1/a/b.txt"],
    ]
    json.dump({
        "table": scope.table(),
        "probes": [[m, p, scope.is_read(p, m)] for m, p in probes],
    }, sys.stdout)
    """
)

_READ_VERBS = (
    "Get",
    "Search",
    "List",
    "BatchGet",
    "Query",
    "Calculate",
    "Download",
    "CreatePresignedDownloadUrl",
)
_WRITE_VERBS = (
    "Create",
    "Delete",
    "Set",
    "Update",
    "Log",
    "Upsert",
    "Register",
    "Restore",
    "Rename",
    "Transition",
    "Finalize",
    "Link",
    "Start",
    "End",
    "Upload",
    "Abort",
    "Complete",
    "Attach",
    "Detach",
    "Add",
    "Remove",
    "Cancel",
    "Test",
)


@pytest.fixture(scope="module")
def route_table(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("route-table")
    from tests.server import clean_env

    result = subprocess.run(
        [sys.executable, "-c", _TABLE_SCRIPT, str(workdir)],
        cwd=workdir,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_every_route_is_classified_and_unknown_routes_are_writes(route_table):
    from mlflow_hokusai.auth import scopes

    rows = route_table["table"]
    assert len(rows) > 300 and all(isinstance(r["read"], bool) for r in rows)
    reads = [r for r in rows if r["read"]]
    print(f"{len(reads)} of {len(rows)} (route, method) pairs are reads")
    for row in rows:
        rpc = (row["rpc"] or "").rsplit(".", 1)[-1]
        if row["read"] and rpc:
            assert rpc.startswith(_READ_VERBS), row
        if rpc.startswith(_WRITE_VERBS) and not rpc.startswith(_READ_VERBS):
            assert not row["read"], row
        if row["method"] in ("PUT", "PATCH", "DELETE"):
            assert not row["read"], row
    probes = {(m, p): read for m, p, read in route_table["probes"]}
    assert probes[("GET", "/api/2.0/mlflow/brand-new/get")] is False  # new routes: denied
    assert probes[("GET", "/api/9.9/unknown")] is False
    assert probes[("POST", "/api/2.0/mlflow/runs/search")] is True
    assert probes[("HEAD", "/api/2.0/mlflow/experiments/get")] is True
    assert probes[("GET", "/api/2.0/mlflow-artifacts/artifacts/1/a/b.txt")] is True
    assert probes[("PUT", "/api/2.0/mlflow-artifacts/artifacts/1/a/b.txt")] is False
    # Every table entry names something MLflow serves (no typos hiding a read). The table was
    # written against MLflow 3.17; older releases lack some routes, which is harmless.
    served_rpcs = {r["rpc"] for r in rows if r["rpc"]}
    served_routes = {(r["method"], r["route"]) for r in rows}
    ours = {r for r in scopes.READ_ROUTES if r[1].startswith("/api/2.0/mlflow/hokusai/")}
    ours.add(("GET", "/metrics"))  # served with --expose-prometheus only: tests/test_metrics.py
    if Version(mlflow.__version__) < Version("3.18"):  # its skills registry is new in 3.18
        ours |= {r for r in scopes.READ_ROUTES if r[1].startswith("/api/3.0/mlflow/skills")}
    missing = sorted(scopes.READ_RPCS - served_rpcs) + sorted(
        scopes.READ_ROUTES - ours - served_routes
    )
    print("table entries this MLflow does not serve:", missing)
    if Version(mlflow.__version__) >= Version("3.17"):
        assert missing == []
    assert {
        ("GET", "/api/2.0/mlflow/hokusai/whoami"),
        ("GET", "/api/2.0/mlflow/hokusai/api-keys/list"),
    } <= served_routes


@pytest.mark.skipif(
    Version(mlflow.__version__) < Version("3.18"),
    reason="MLflow before 3.18 has no skills registry (.ci/newest runs this on 3.18)",
)
def test_a_read_key_lists_skills_and_registers_none(server, world):
    skills = "/ajax-api/3.0/mlflow/skills"
    listed = server.get(skills, world["read"])
    assert listed.status_code == 200, listed.text
    made = server.post(skills, world["read"], json={"name": f"skill-{time.time_ns()}"})
    assert made.status_code == 403 and "read-only" in made.json()["message"]
    assert server.get(skills, world["read"]).json() == listed.json()  # nothing registered
