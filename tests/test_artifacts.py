"""The URL layout and artifacts, against real servers whose artifacts go to S3 (moto's server).

One uvicorn server is shared by most tests; a gunicorn one and one started with MLflow's
``--static-prefix`` check the same paths under the other runner and the other layout.
"""

import hashlib
import os
import time
from urllib.parse import quote

import numpy as np
import pytest
import requests

from tests.s3 import MotoS3
from tests.server import Server

PREFIX = "/api/mlflow"
BUCKET_PREFIX = "artifacts"
KiB, MiB = 1024, 1024 * 1024


@pytest.fixture(scope="module")
def s3():
    endpoint = MotoS3().start()
    yield endpoint
    endpoint.stop()


def _s3_server(s3, tmp_path_factory, name, *args, health_path="/health"):
    return Server(
        str(tmp_path_factory.mktemp(name)),
        workers=1,
        health_path=health_path,
        env=s3.server_env(MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD="true"),
        args=["--artifacts-destination", f"s3://{s3.bucket}/{BUCKET_PREFIX}/{name}", *args],
    )


@pytest.fixture(scope="module")
def servers(s3, tmp_path_factory):
    """The module's three servers."""
    started = {
        "uvicorn": _s3_server(s3, tmp_path_factory, "uvicorn"),
        "gunicorn": _s3_server(
            s3, tmp_path_factory, "gunicorn", "--gunicorn-opts", "--timeout 120", "--workers", "1"
        ),
        "static": _s3_server(
            s3,
            tmp_path_factory,
            "static",
            "--static-prefix",
            "/mlflow-ui",
            health_path="/mlflow-ui/health",
        ),
    }
    try:
        for server in started.values():
            server.start()
        yield started
    finally:
        for server in started.values():
            server.stop()


@pytest.fixture(scope="module")
def srv(servers):
    return servers["uvicorn"]


@pytest.fixture(scope="module")
def users(srv):
    return {name: srv.create_key(name) for name in ("owner", "outsider")}


def _headers(key):
    return {"Authorization": f"Bearer {key}"}


def _bucket_keys(s3, name, run):
    prefix = f"{BUCKET_PREFIX}/{name}/{run.info.experiment_id}/{run.info.run_id}/artifacts/"
    return {k[len(prefix) :]: size for k, size in s3.objects(prefix).items()}


def _write(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def _digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _run_with_files(mlflow, tmp_path, experiment):
    """A run holding a.txt, sub/b.txt and sub/deeper/c.txt, logged by the stock client."""
    mlflow.set_experiment(experiment)
    with mlflow.start_run() as run:
        mlflow.log_artifact(_write(tmp_path / "a.txt", b"alpha"))
        _write(tmp_path / "tree" / "b.txt", b"bravo")
        _write(tmp_path / "tree" / "deeper" / "c.txt", b"charlie")
        mlflow.log_artifacts(str(tmp_path / "tree"), artifact_path="sub")
    return run


# --- the stock client, with and without the prefix ---------------------------------------


@pytest.mark.parametrize("prefix", ["", PREFIX])
def test_stock_client_round_trip_to_s3(srv, s3, users, tracking, tmp_path, prefix):
    from sklearn.linear_model import LogisticRegression

    with tracking(srv, users["owner"], prefix) as mlflow:
        run = _run_with_files(mlflow, tmp_path, f"client-roundtrip{prefix.replace('/', '-')}")
        client = mlflow.MlflowClient()
        assert {f.path for f in client.list_artifacts(run.info.run_id)} == {"a.txt", "sub"}
        assert {f.path for f in client.list_artifacts(run.info.run_id, "sub")} == {
            "sub/b.txt",
            "sub/deeper",
        }
        out = mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, dst_path=str(tmp_path / "down")
        )
        assert open(os.path.join(out, "sub", "deeper", "c.txt"), "rb").read() == b"charlie"
        assert _bucket_keys(s3, "uvicorn", run) == {
            "a.txt": 5,
            "sub/b.txt": 5,
            "sub/deeper/c.txt": 7,
        }

        # Delete through the stock client's artifact repository (DELETE on the proxy).
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        get_artifact_repository(run.info.artifact_uri).delete_artifacts("sub/deeper")
        assert _bucket_keys(s3, "uvicorn", run) == {"a.txt": 5, "sub/b.txt": 5}

        x = np.array([[0.0], [1.0], [2.0], [3.0]])
        model = LogisticRegression().fit(x, [0, 0, 1, 1])
        with mlflow.start_run(experiment_id=run.info.experiment_id):
            info = mlflow.sklearn.log_model(model, name="model")
        loaded = mlflow.pyfunc.load_model(info.model_uri)
        assert list(loaded.predict(x)) == [0, 0, 1, 1]
        model_keys = s3.objects(f"{BUCKET_PREFIX}/uvicorn/{run.info.experiment_id}/models/")
        assert any(k.endswith("/artifacts/MLmodel") for k in model_keys)


def test_multipart_upload_through_the_prefix(srv, s3, users, tracking, tmp_path, monkeypatch):
    data = os.urandom(11 * MiB)
    with tracking(srv, users["owner"], PREFIX) as mlflow:
        monkeypatch.setenv("MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD", "true")
        monkeypatch.setenv("MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE", str(6 * MiB))
        monkeypatch.setenv("MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE", str(5 * MiB))
        mlflow.set_experiment("multipart")
        with mlflow.start_run() as run:
            mlflow.log_artifact(_write(tmp_path / "big.bin", data))
        assert _bucket_keys(s3, "uvicorn", run) == {"big.bin": len(data)}
        out = mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, artifact_path="big.bin", dst_path=str(tmp_path / "d")
        )
        assert _digest(out) == hashlib.sha256(data).hexdigest()
    log = srv.log_text()
    assert f"POST {PREFIX}/api/2.0/mlflow-artifacts/mpu/create/" in log
    assert f"POST {PREFIX}/api/2.0/mlflow-artifacts/mpu/complete/" in log


# --- the artifact API on both paths, at / and under the prefix ----------------------------


@pytest.mark.parametrize("prefix", ["", PREFIX])
@pytest.mark.parametrize("api", ["/api/2.0", "/ajax-api/2.0"])
def test_artifact_api_on_both_paths(srv, s3, users, tracking, tmp_path, prefix, api):
    with tracking(srv, users["owner"], "") as mlflow:
        mlflow.set_experiment("both-paths")
        with mlflow.start_run() as run:
            pass
    root = f"{srv.url}{prefix}{api}/mlflow-artifacts"
    rel = f"{run.info.experiment_id}/{run.info.run_id}/artifacts"
    key = _headers(users["owner"])

    put = requests.put(f"{root}/artifacts/{rel}/dir/x.txt", data=b"x-ray", headers=key, timeout=30)
    assert put.status_code == 200, put.text
    got = requests.get(f"{root}/artifacts/{rel}/dir/x.txt", headers=key, timeout=30)
    assert (got.status_code, got.content) == (200, b"x-ray")
    listed = requests.get(
        f"{root}/artifacts", params={"path": f"{rel}/dir"}, headers=key, timeout=30
    )
    assert listed.json() == {"files": [{"path": "x.txt", "is_dir": False, "file_size": 5}]}

    # Multipart, driven by hand: create, one part to the presigned URL, complete.
    created = requests.post(
        f"{root}/mpu/create/{rel}", json={"path": "mp.bin", "num_parts": 1}, headers=key, timeout=30
    )
    assert created.status_code == 200, created.text
    body = created.json()
    part = requests.put(body["credentials"][0]["url"], data=b"parted", timeout=30)
    assert part.status_code == 200, part.text
    done = requests.post(
        f"{root}/mpu/complete/{rel}",
        json={
            "path": "mp.bin",
            "upload_id": body["upload_id"],
            "parts": [{"part_number": 1, "etag": part.headers["ETag"]}],
        },
        headers=key,
        timeout=30,
    )
    assert done.status_code == 200, done.text
    assert _bucket_keys(s3, "uvicorn", run) == {"dir/x.txt": 5, "mp.bin": 6}

    deleted = requests.delete(f"{root}/artifacts/{rel}/dir", headers=key, timeout=30)
    assert deleted.status_code == 200, deleted.text
    assert _bucket_keys(s3, "uvicorn", run) == {"mp.bin": 6}

    # Authorized per experiment, like MLflow: another user may read but not write or delete.
    other = _headers(users["outsider"])
    assert (
        requests.get(f"{root}/artifacts/{rel}/mp.bin", headers=other, timeout=30).status_code == 200
    )
    for method in ("put", "delete"):
        denied = requests.request(
            method, f"{root}/artifacts/{rel}/mp.bin", data=b"no", headers=other, timeout=30
        )
        assert denied.status_code == 403, denied.text
        assert denied.json()["error_code"] == "PERMISSION_DENIED"
    assert requests.get(f"{root}/artifacts/{rel}/mp.bin", timeout=30).status_code == 401


# --- the ?run_id= listing ------------------------------------------------------------------


@pytest.fixture(scope="module")
def listed_run(srv, users, tmp_path_factory):
    import mlflow

    os.environ.pop("MLFLOW_TRACKING_URI", None)
    mlflow.set_tracking_uri(srv.url)
    try:
        with _token(users["owner"]):
            run = _run_with_files(mlflow, tmp_path_factory.mktemp("listed"), "listed")
            private = mlflow.create_experiment("private")
            private_run = mlflow.MlflowClient().create_run(private)
    finally:
        mlflow.set_tracking_uri(None)
    # Take the outsider's read away: MLflow 3.17 calls that DENY; 3.15 cannot deny one
    # resource below the server's default permission (READ here).
    granted = srv.post(
        "/api/3.0/mlflow/users/permissions/grant",
        srv.admin_key,
        json={
            "username": "outsider",
            "resource_type": "experiment",
            "resource_id": private,
            "permission": "DENY",
        },
    )
    assert granted.status_code in (200, 400), granted.text
    return run, private_run if granted.status_code == 200 else None


class _token:
    def __init__(self, key):
        self.key = key

    def __enter__(self):
        self.old = os.environ.get("MLFLOW_TRACKING_TOKEN")
        os.environ["MLFLOW_TRACKING_TOKEN"] = self.key

    def __exit__(self, *exc):
        if self.old is None:
            os.environ.pop("MLFLOW_TRACKING_TOKEN", None)
        else:
            os.environ["MLFLOW_TRACKING_TOKEN"] = self.old


def _listing(srv, key, query: str, prefix=PREFIX, api="/ajax-api/2.0"):
    return requests.get(
        f"{srv.url}{prefix}{api}/mlflow-artifacts/artifacts?{query}",
        headers=_headers(key) if key else {},
        timeout=30,
    )


@pytest.mark.parametrize("prefix", ["", PREFIX])
@pytest.mark.parametrize("api", ["/api/2.0", "/ajax-api/2.0"])
def test_run_id_listing(srv, users, listed_run, prefix, api):
    run = listed_run[0].info.run_id
    top = _listing(srv, users["owner"], f"run_id={run}", prefix, api)
    assert top.status_code == 200, top.text
    assert sorted((f["path"], f["is_dir"]) for f in top.json()["files"]) == [
        ("a.txt", False),
        ("sub", True),
    ]
    assert [f["file_size"] for f in top.json()["files"] if f["path"] == "a.txt"] == [5]
    sub = _listing(srv, users["owner"], f"run_id={run}&path=sub/deeper", prefix, api)
    assert sub.json()["files"] == [{"path": "sub/deeper/c.txt", "is_dir": False, "file_size": 7}]
    # Readable by others under the default READ permission, and by the admin.
    assert _listing(srv, users["outsider"], f"run_id={run}", prefix, api).status_code == 200
    assert _listing(srv, srv.admin_key, f"run_id={run}", prefix, api).status_code == 200


def test_run_id_listing_needs_read_on_the_runs_experiment(srv, users, listed_run):
    if listed_run[1] is None:
        pytest.skip("this MLflow cannot deny one experiment below the default permission")
    private = listed_run[1].info.run_id
    denied = _listing(srv, users["outsider"], f"run_id={private}")
    assert denied.status_code == 403, denied.text
    assert denied.json()["error_code"] == "PERMISSION_DENIED"
    assert _listing(srv, users["owner"], f"run_id={private}").status_code == 200
    assert _listing(srv, srv.admin_key, f"run_id={private}").status_code == 200
    assert _listing(srv, None, f"run_id={private}").status_code == 401


@pytest.mark.parametrize("who", ["owner", "admin"])
def test_run_id_listing_of_an_unknown_run_is_404(srv, users, who):
    key = srv.admin_key if who == "admin" else users[who]
    response = _listing(srv, key, "run_id=" + "0" * 32)
    assert response.status_code == 404, response.text
    assert response.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"


@pytest.mark.parametrize(
    "raw_path",
    [
        "..",
        "../..",
        "sub/../..",
        "sub/../../other",
        "%2e%2e",
        "%2E%2E/x",
        "%252e%252e/x",
        "sub%2f..%2f..",
        "/etc",
        "%2fetc",
        "..%5cx",
        "sub\\..\\..",
        "C:/x",
        "a%00b",
    ],
)
def test_run_id_listing_refuses_paths_outside_the_run(srv, users, listed_run, raw_path):
    run = listed_run[0].info.run_id
    response = _listing(srv, users["owner"], f"run_id={run}&path={raw_path}")
    assert response.status_code == 400, response.text
    assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE"


def test_run_id_listing_without_a_run_id_value_is_400(srv, users):
    response = _listing(srv, users["owner"], "run_id=")
    assert response.status_code == 400
    assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE"


@pytest.mark.parametrize("query", ["", "path=", "path=.", "path=%2F", "path=workspaces"])
def test_the_artifact_root_listing_is_for_admins(srv, users, listed_run, query):
    denied = _listing(srv, users["outsider"], query, api="/api/2.0")
    assert denied.status_code == 403, denied.text
    assert denied.json()["error_code"] == "PERMISSION_DENIED"
    if query in ("", "path="):
        allowed = _listing(srv, srv.admin_key, query, api="/api/2.0")
        assert allowed.status_code == 200, allowed.text
        assert listed_run[0].info.experiment_id in {f["path"] for f in allowed.json()["files"]}
    # A path naming an experiment is authorized by MLflow on that experiment.
    exp = listed_run[0].info.experiment_id
    assert _listing(srv, users["outsider"], f"path={exp}", api="/api/2.0").status_code == 200
    if listed_run[1] is not None:
        private_exp = listed_run[1].info.experiment_id
        assert (
            _listing(srv, users["outsider"], f"path={private_exp}", api="/api/2.0").status_code
            == 403
        )


# --- the prefix itself ----------------------------------------------------------------------


def test_prefix_without_slash_redirects_to_the_ui(srv):
    response = requests.get(srv.url + PREFIX + "?x=1", allow_redirects=False, timeout=30)
    assert response.status_code == 308
    assert response.headers["Location"] == PREFIX + "/?x=1"
    assert requests.get(srv.url + PREFIX + "/", timeout=30).status_code == 401
    page = requests.get(srv.url + PREFIX + "/", headers=_headers(srv.admin_key), timeout=30)
    assert page.status_code == 200 and "static-files/" in page.text
    for path in ("/health", PREFIX + "/health", PREFIX + "/static-files/favicon.ico"):
        assert requests.get(srv.url + path, timeout=30).status_code == 200, path


@pytest.mark.parametrize(
    "path",
    [
        PREFIX + "/api/2.0/mlflow/experiments/search?max_results=1",
        PREFIX + "/ajax-api/2.0/mlflow-artifacts/artifacts/0/x",
        PREFIX + "/api/3.0/mlflow/server-info/../../2.0/mlflow/experiments/search",
        "/api/ml%66low/api/2.0/mlflow/experiments/search",
        PREFIX + "/ajax-api/3.0/jobs/search",
    ],
)
def test_prefix_paths_need_a_key_like_their_canonical_twins(srv, path):
    response = requests.get(srv.url + path, timeout=30)
    assert response.status_code in (401, 404), response.text
    if response.status_code == 401:
        assert response.json()["error_code"] == "UNAUTHENTICATED"


# --- the other runner, and MLflow's --static-prefix -----------------------------------------


@pytest.fixture(scope="module")
def gunicorn_srv(servers):
    return servers["gunicorn"]


@pytest.fixture(scope="module")
def static_srv(servers):
    return servers["static"]


def _client_works(srv, s3, name, tracking, tmp_path, prefix):
    key = srv.create_key("runner-user")
    with tracking(srv, key, prefix) as mlflow:
        run = _run_with_files(mlflow, tmp_path, f"exp{prefix.replace('/', '-')}")
        client = mlflow.MlflowClient()
        assert {f.path for f in client.list_artifacts(run.info.run_id, "sub")} == {
            "sub/b.txt",
            "sub/deeper",
        }
        out = mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, dst_path=str(tmp_path / "down")
        )
        assert open(os.path.join(out, "a.txt"), "rb").read() == b"alpha"
    assert _bucket_keys(s3, name, run) == {"a.txt": 5, "sub/b.txt": 5, "sub/deeper/c.txt": 7}
    listing = requests.get(
        f"{srv.url}{prefix}/api/2.0/mlflow-artifacts/artifacts?run_id={run.info.run_id}"
        f"&path={quote('sub')}",
        headers=_headers(key),
        timeout=30,
    )
    assert listing.status_code == 200, listing.text
    assert {f["path"] for f in listing.json()["files"]} == {"sub/b.txt", "sub/deeper"}
    return key, run


@pytest.mark.parametrize("prefix", ["", PREFIX])
def test_gunicorn_serves_the_same_layout(gunicorn_srv, s3, tracking, tmp_path, prefix):
    _client_works(gunicorn_srv, s3, "gunicorn", tracking, tmp_path, prefix)
    response = requests.get(gunicorn_srv.url + PREFIX, allow_redirects=False, timeout=30)
    assert response.status_code == 308


@pytest.mark.parametrize("prefix", ["/mlflow-ui", PREFIX])
def test_static_prefix_and_url_prefix_together(static_srv, s3, tracking, tmp_path, prefix):
    key, run = _client_works(static_srv, s3, "static", tracking, tmp_path, prefix)
    page = requests.get(f"{static_srv.url}{prefix}/", headers=_headers(key), timeout=30)
    assert page.status_code == 200 and "static-files/" in page.text
    assert requests.get(f"{static_srv.url}{prefix}/health", timeout=30).status_code == 200
    # Uploads under either prefix reach MLflow's streaming FastAPI route (which answers a
    # path without a file name with its own 400 {"detail": ...}), not the buffering Flask twin.
    rel = f"{run.info.experiment_id}/{run.info.run_id}/artifacts"
    probe = requests.put(
        f"{static_srv.url}{prefix}/api/2.0/mlflow-artifacts/artifacts/{rel}/",
        data=b"x",
        headers=_headers(key),
        timeout=30,
    )
    assert probe.status_code == 400 and "detail" in probe.json(), probe.text


@pytest.mark.parametrize("prefix", ["/mlflow-ui", PREFIX])
@pytest.mark.parametrize("api", ["/api/2.0", "/ajax-api/2.0"])
def test_the_token_exchange_needs_no_key_under_the_static_prefix(static_srv, prefix, api):
    """Public at the gate and in MLflow's engine alike (MLflow adds --static-prefix to its
    unprotected paths itself): a bad exchange is our 400, not a 401 asking for a key."""
    answer = requests.post(
        f"{static_srv.url}{prefix}{api}/mlflow/hokusai/token-exchange",
        data={"grant_type": "password"},
        timeout=30,
    )
    assert answer.status_code == 400, answer.text
    assert "'grant_type' must be" in answer.json()["message"]


# -- MLflow 3 logged models in the ?run_id= listing ------------------------------------------
@pytest.fixture(scope="module")
def guide_run(srv, users):
    """The guide's complete workflow: a RandomForest logged with log_model(model, "model") and
    registered, plus one ordinary artifact; and a run whose artifact root already has a
    "model" directory beside a logged model named "model"."""
    import mlflow
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    suffix = time.time_ns()
    with _token(users["owner"]):
        mlflow.set_tracking_uri(srv.url + PREFIX)
        try:
            mlflow.set_experiment(f"guide-models-{suffix}")
            X, y = make_classification(n_samples=200, n_features=8, random_state=42)
            model = RandomForestClassifier(n_estimators=10, max_depth=4, random_state=42).fit(X, y)
            with mlflow.start_run() as run:
                mlflow.log_metric("accuracy", model.score(X, y))
                mlflow.sklearn.log_model(
                    model,
                    "model",
                    registered_model_name=f"rf-classifier-{suffix}",
                    skops_trusted_types=["sklearn.tree._tree.Tree"],
                )
                mlflow.log_text("hello", "notes/readme.txt")
            with mlflow.start_run() as clash:
                mlflow.log_text("mine", "model/own.txt")  # an artifact directory named model
                logged = mlflow.sklearn.log_model(
                    model, "model", skops_trusted_types=["sklearn.tree._tree.Tree"]
                )
        finally:
            mlflow.set_tracking_uri(None)
    return run.info.run_id, clash.info.run_id, logged.model_id


@pytest.mark.parametrize("api", ["/ajax-api/2.0", "/api/2.0"])
def test_the_listing_shows_the_runs_logged_model(srv, users, guide_run, api):
    run_id = guide_run[0]
    top = _listing(srv, users["owner"], f"run_id={run_id}", PREFIX, api)
    assert top.status_code == 200, top.text
    entries = {f["path"]: f for f in top.json()["files"]}
    assert entries["notes"]["is_dir"] and "logged_model_id" not in entries["notes"]
    assert entries["model"]["is_dir"] and entries["model"]["logged_model_id"].startswith("m-")
    inside = _listing(srv, users["owner"], f"run_id={run_id}&path=model", PREFIX, api)
    assert inside.status_code == 200, inside.text
    files = {f["path"]: f for f in inside.json()["files"]}
    assert {"model/MLmodel", "model/requirements.txt"} <= set(files)
    assert inside.json()["logged_model_id"] == entries["model"]["logged_model_id"]
    # The guide's own requests snippet, one level down: a file downloads.
    mlmodel = _listing(srv, users["owner"], f"run_id={run_id}&path=model/MLmodel", PREFIX, api)
    assert mlmodel.status_code == 200, mlmodel.text
    assert b"flavors:" in mlmodel.content and b"sklearn" in mlmodel.content
    assert len(mlmodel.content) == files["model/MLmodel"]["file_size"]
    # Ordinary artifacts list as before.
    notes = _listing(srv, users["owner"], f"run_id={run_id}&path=notes", PREFIX, api)
    assert notes.json()["files"] == [{"path": "notes/readme.txt", "is_dir": False, "file_size": 5}]


def test_an_artifact_directory_keeps_its_name_and_the_model_is_listed_by_id(srv, users, guide_run):
    _, clash_id, model_id = guide_run
    top = {
        f["path"]: f for f in _listing(srv, users["owner"], f"run_id={clash_id}").json()["files"]
    }
    assert "logged_model_id" not in top["model"]  # the run's own directory wins the name
    assert top[model_id]["logged_model_id"] == model_id
    own = _listing(srv, users["owner"], f"run_id={clash_id}&path=model").json()["files"]
    assert [f["path"] for f in own] == ["model/own.txt"]
    by_id = _listing(srv, users["owner"], f"run_id={clash_id}&path={model_id}").json()["files"]
    assert f"{model_id}/MLmodel" in {f["path"] for f in by_id}


def test_the_logged_model_needs_read_on_the_runs_experiment(srv, users, guide_run):
    run_id = guide_run[0]
    anonymous = _listing(srv, None, f"run_id={run_id}&path=model/MLmodel")
    assert anonymous.status_code == 401
    escaped = _listing(srv, users["owner"], f"run_id={run_id}&path=model/../../x")
    assert escaped.status_code == 400
