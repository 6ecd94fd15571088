"""Faults on a production-like server: PostgreSQL for everything, S3 (moto) for artifacts.

The server here has its own PostgreSQL cluster (the tests stop it) and its own S3 endpoint.
It starts with 4 workers on an empty database, so start-up migrations race and must not clash.
"""

import json
import threading
import time

import pytest
import requests
import sqlalchemy as sa

from mlflow_hokusai.keys.format import generate_key
from tests.pg import PostgresCluster
from tests.s3 import MotoS3
from tests.server import Server

pytestmark = pytest.mark.postgres
WORKERS = 4
SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    cluster = PostgresCluster().start()
    s3 = MotoS3().start()
    server = None
    try:
        uri = cluster.create_database("faults")
        env = {
            "HOKUSAI_DATABASE_URI": uri,
            "HOKUSAI_ADMIN_API_KEY": generate_key(),
            # One retry keeps the S3-outage answers quick; the default (5) only makes them slower.
            **s3.server_env(AWS_MAX_ATTEMPTS="2"),
        }
        server = Server(
            str(tmp_path_factory.mktemp("faults")),
            workers=WORKERS,
            env=env,
            backend_store_uri=uri,
            args=["--artifacts-destination", f"s3://{s3.bucket}/artifacts"],
        )
        server.start(timeout=240)
        yield cluster, s3, server
    finally:
        if server is not None:
            server.stop()
        s3.stop()
        cluster.destroy()


def _fresh(server, path, key, **kwargs):
    """One request on a new connection (so successive calls spread over the workers)."""
    headers = {"Authorization": f"Bearer {key}", "Connection": "close"}
    return requests.get(server.url + path, headers=headers, timeout=30, **kwargs)


def test_four_workers_migrate_an_empty_database_once(stack):
    _, _, server = stack
    engine = sa.create_engine(server.database_uri)
    try:
        with engine.connect() as conn:
            ours = conn.execute(sa.text("SELECT version_num FROM hokusai_alembic_version")).all()
            theirs = conn.execute(sa.text("SELECT version_num FROM alembic_version_auth")).all()
            admins = conn.execute(sa.text("SELECT count(*) FROM users WHERE username = 'admin'"))
            admin_keys = conn.execute(
                sa.text("SELECT count(*) FROM hokusai_api_keys WHERE username = 'admin'")
            )
            secrets = conn.execute(sa.text("SELECT count(*) FROM hokusai_settings"))
            assert len(ours) == 1 and len(theirs) == 1
            assert admins.scalar_one() == 1 and admin_keys.scalar_one() == 1
            assert secrets.scalar_one() >= 1
    finally:
        engine.dispose()
    assert server.log_text().count("Application startup complete") == WORKERS
    codes = {_fresh(server, SEARCH, server.admin_key).status_code for _ in range(4 * WORKERS)}
    assert codes == {200}


def _watch(server, key, stop: threading.Event, seen: list):
    """Send requests until ``stop``; record (time sent, status, headers, body)."""
    while not stop.is_set():
        sent = time.monotonic()
        try:
            response = _fresh(server, SEARCH, key)
            seen.append((sent, response.status_code, response.headers, response.text))
        except requests.RequestException as error:  # would be a failure: record it
            seen.append((sent, None, {}, repr(error)))
        time.sleep(0.02)


def test_database_outage_fails_closed_with_503_then_recovers(stack):
    cluster, _, server = stack
    key = server.create_key("outage-user")
    unknown = generate_key()
    for _ in range(3 * WORKERS):  # warm every worker's cache with the key
        assert _fresh(server, SEARCH, key).status_code == 200
    startups = server.log_text().count("Application startup complete")

    stop, seen = threading.Event(), []
    watcher = threading.Thread(target=_watch, args=(server, key, stop, seen))
    watcher.start()
    try:
        time.sleep(0.3)
        stopped_at = time.monotonic()
        cluster.stop()  # fast shutdown: open connections are cut
        down_at = time.monotonic()
        time.sleep(1.5)  # past the 1 s key cache: every lookup must now reach the database
        during = [_fresh(server, SEARCH, key) for _ in range(2 * WORKERS)]
        during += [_fresh(server, SEARCH, unknown) for _ in range(WORKERS)]
        whoami = _fresh(server, "/api/2.0/mlflow/hokusai/whoami", key)
        anonymous = requests.get(server.url + SEARCH, timeout=30)
        restart_at = time.monotonic()
        cluster.start()
        up_at = time.monotonic()
        deadline = up_at + 60
        while time.monotonic() < deadline and not any(
            status == 200 and sent >= up_at for sent, status, *_ in list(seen)
        ):
            time.sleep(0.05)
    finally:
        stop.set()
        watcher.join(60)

    for response in during + [whoami]:
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"].isdigit()
        assert response.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
    assert anonymous.status_code == 401  # no credential needs no database

    after_stop = [s for s in seen if stopped_at <= s[0] < restart_at]
    assert after_stop, "the watcher sent nothing during the outage"
    for sent, status, headers, body in after_stop:
        # A request already past authentication when the cut came may still finish with 200
        # (sent before pg_ctl returned); nothing sent after the database was down may pass.
        assert status in (200, 503) if sent < down_at else status == 503, (status, body)
        assert status != 500 and "Traceback" not in body
        if status == 503:
            assert headers.get("Retry-After") and json.loads(body)["error_code"] == (
                "TEMPORARILY_UNAVAILABLE"
            )
    assert not any("127.0.0.1" in s[3] or "psycopg" in s[3] for s in after_stop)

    first_503 = min(s[0] for s in after_stop if s[1] == 503)
    back = [s for s in seen if s[0] >= restart_at and s[1] == 200]
    assert back, "the server did not serve again after PostgreSQL came back"
    print(
        f"\noutage: first 503 {first_503 - stopped_at:.3f}s after pg_ctl stop was issued "
        f"(stop took {down_at - stopped_at:.3f}s); PostgreSQL ready {up_at - restart_at:.3f}s "
        f"after pg_ctl start; first request answered 200 was sent "
        f"{back[0][0] - restart_at:.3f}s after pg_ctl start "
        f"({len(after_stop)} watched requests during the outage, "
        f"{sum(1 for s in after_stop if s[1] == 503)} of them 503)"
    )
    # Same processes: no worker restarted, and every worker serves again.
    assert server.proc.poll() is None
    assert server.log_text().count("Application startup complete") == startups
    codes = [_fresh(server, SEARCH, key).status_code for _ in range(4 * WORKERS)]
    assert codes == [200] * len(codes)


def test_a_cached_key_meeting_a_database_outage_gets_our_503_everywhere(stack):
    """Within the key cache's second the gate lets the request on, and it meets the outage
    inside MLflow (its stores, its FastAPI middleware, the native artifact and OTLP routes):
    every 503 still is our JSON with Retry-After, and no driver text (host, port) leaks."""
    cluster, _, server = stack
    key = server.create_key("cached-outage-user")
    auth = {"Authorization": f"Bearer {key}"}
    experiment = requests.post(
        server.url + "/api/2.0/mlflow/experiments/create",
        headers=auth,
        timeout=30,
        json={"name": f"cached-outage-{time.time_ns()}"},
    ).json()["experiment_id"]
    run_id = requests.post(
        server.url + "/api/2.0/mlflow/runs/create",
        headers=auth,
        timeout=30,
        json={"experiment_id": experiment},
    ).json()["run"]["info"]["run_id"]
    artifact = f"/api/2.0/mlflow-artifacts/artifacts/{experiment}/{run_id}/artifacts/a.txt"
    calls = [
        (
            "POST",
            "/api/2.0/mlflow/runs/log-metric",
            {"json": {"run_id": run_id, "key": "m", "value": 1.0, "timestamp": 0}},
        ),
        ("PUT", artifact, {"data": b"x"}),
        ("GET", artifact, {}),
        ("PUT", "/api/mlflow" + artifact, {"data": b"x"}),
        (
            "POST",
            "/v1/traces",
            {
                "data": b"",
                "headers": {
                    "Content-Type": "application/x-protobuf",
                    "x-mlflow-experiment-id": experiment,
                },
            },
        ),
    ]

    def call(method, path, extra):
        headers = {**auth, "Connection": "close", **extra.get("headers", {})}
        kwargs = {k: v for k, v in extra.items() if k != "headers"}
        return requests.request(method, server.url + path, headers=headers, timeout=60, **kwargs)

    for _ in range(3 * WORKERS):  # every worker has the key and the grants cached
        for method, path, extra in calls:
            call(method, path, extra)
    cluster.stop()
    try:
        during = [
            call(method, path, extra) for _ in range(WORKERS) for method, path, extra in calls
        ]
    finally:
        cluster.start()
    deadline = time.monotonic() + 60
    while _fresh(server, SEARCH, key).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    unavailable = [r for r in during if r.status_code == 503]
    assert unavailable, [(r.status_code, r.text[:100]) for r in during]
    for response in during:
        assert response.status_code != 500, response.text
        assert "127.0.0.1" not in response.text and "psycopg" not in response.text
    for response in unavailable:
        assert response.headers["Content-Type"] == "application/json", response.text
        assert response.headers["Retry-After"].isdigit()
        assert response.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"


def test_s3_outage_fails_artifact_calls_clearly_while_tracking_works(stack, tracking):
    _, s3, server = stack
    key = server.create_key("s3-outage-user")
    with tracking(server, key) as mlflow:
        mlflow.set_experiment(f"s3-outage-{time.time_ns()}")
        with mlflow.start_run() as run:
            mlflow.log_text("before the outage", "notes/before.txt")
        run_id = run.info.run_id
        assert s3.objects("artifacts/")  # the artifact really went to S3
        s3.stop()

        artifacts = f"/api/2.0/mlflow-artifacts/artifacts/{run.info.experiment_id}/{run_id}"
        responses = {
            "list": _fresh(
                server, "/api/2.0/mlflow/artifacts/list", key, params={"run_id": run_id}
            ),
            "download": _fresh(server, artifacts + "/artifacts/notes/before.txt", key),
            "upload": requests.put(
                server.url + artifacts + "/artifacts/notes/after.txt",
                data=b"after",
                headers={"Authorization": f"Bearer {key}"},
                timeout=60,
            ),
        }
        for name, response in responses.items():
            assert response.status_code >= 500, (name, response.status_code, response.text)
            assert response.headers["Content-Type"].startswith("application/json"), (
                name,
                response.text,
            )
            assert "Traceback" not in response.text and response.json()["message"], name
            print(f"\nS3 down, artifact {name}: {response.status_code} {response.text[:160]}")

        # Tracking goes on.
        with mlflow.start_run(run_id=run_id):
            mlflow.log_metric("still_tracking", 1.0)
            mlflow.set_tag("s3", "down")
        client = mlflow.MlflowClient()
        assert client.get_run(run_id).data.metrics["still_tracking"] == 1.0
        assert mlflow.search_runs(search_all_experiments=True, filter_string="tags.s3 = 'down'")[
            "run_id"
        ].tolist() == [run_id]
