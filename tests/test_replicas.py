"""Two replicas (2 workers each) on one PostgreSQL database and one S3 bucket, as behind a
load balancer: keys agree across replicas within the 1 s cache bound, and 8 concurrent stock
clients lose no metric."""

import subprocess
import sys
import textwrap
import threading
import time

import pytest
import requests
import sqlalchemy as sa

from mlflow_hokusai.keys.format import generate_key
from tests.s3 import MotoS3
from tests.server import Server, clean_env
from tests.test_fresh_refusals import create_then_use

pytestmark = pytest.mark.postgres
WHOAMI = "/api/2.0/mlflow/hokusai/whoami"
KEYS = "/api/2.0/mlflow/hokusai/api-keys"
CLIENTS = 8
PER_CLIENT = 400  # half through log_batch, half through single log_metric calls


@pytest.fixture(scope="module")
def replicas(postgres, tmp_path_factory):
    uri = postgres.create_database("replicas")
    # MLflow's own tracking tables are created by `mlflow server` before our code runs, with
    # no cross-process lock: on a fresh database the operator runs this once (README).
    subprocess.run(
        [sys.executable, "-m", "mlflow", "db", "upgrade", uri],
        check=True,
        capture_output=True,
        env=clean_env(),
        timeout=300,
    )
    s3 = MotoS3().start()
    admin = generate_key()
    env = {
        "HOKUSAI_DATABASE_URI": uri,
        "HOKUSAI_ADMIN_API_KEY": admin,
        # key policies, enforced on every worker of every replica (tests at the end)
        "HOKUSAI_DEFAULT_KEY_LIFETIME_DAYS": "90",
        "HOKUSAI_EXPIRE_UNUSED_AFTER_DAYS": "30",
        **s3.server_env(),
    }
    args = ["--artifacts-destination", f"s3://{s3.bucket}/replicas"]
    servers = [
        Server(
            str(tmp_path_factory.mktemp(name)), workers=2, env=env, backend_store_uri=uri, args=args
        )
        for name in ("replica-a", "replica-b")
    ]
    try:
        # Both replicas start at once: our migrations and MLflow's auth migrations race.
        for server in servers:
            server.launch()
        for server in servers:
            server.wait_ready(300)
        yield servers[0], servers[1], s3
    finally:
        for server in servers:
            server.stop()
        s3.stop()


def _fresh(server, path, key, method="GET", **kwargs):
    """One request on its own connection, so successive calls spread over the workers."""
    headers = {"Authorization": f"Bearer {key}", "Connection": "close"}
    return requests.request(method, server.url + path, headers=headers, timeout=30, **kwargs)


def test_replicas_started_at_once_share_one_migrated_database(replicas):
    a, b, _ = replicas
    engine = sa.create_engine(a.database_uri)
    try:
        with engine.connect() as conn:
            for table in ("hokusai_alembic_version", "alembic_version_auth", "alembic_version"):
                assert len(conn.execute(sa.text(f"SELECT * FROM {table}")).all()) == 1, table
            admins = "SELECT count(*) FROM users WHERE username = 'admin'"
            assert conn.execute(sa.text(admins)).scalar_one() == 1
    finally:
        engine.dispose()
    for server in (a, b):
        assert _fresh(server, WHOAMI, server.admin_key).json()["username"] == "admin"


def test_key_created_on_a_works_on_b_at_once(replicas):
    a, b, _ = replicas
    created = _fresh(a, KEYS + "/create", a.admin_key, "POST", json={"username": "carol"})
    assert created.status_code == 200, created.text
    key = created.json()["key"]
    assert _fresh(b, WHOAMI, key).json()["username"] == "carol"  # the very first request
    by_cli = a.create_key("dave")
    assert _fresh(b, WHOAMI, by_cli).json()["username"] == "dave"


def _refused_everywhere_within_a_second(b, key, change):
    """Warm B's workers, apply ``change`` (through A or the CLI), then watch B: every request
    sent 1 s after the change returned is refused. Returns the staleness observed."""
    for _ in range(12):
        assert _fresh(b, WHOAMI, key).status_code == 200
    seen, stop = [], threading.Event()

    def watch():
        while not stop.is_set():
            sent = time.monotonic()
            seen.append((sent, _fresh(b, WHOAMI, key).status_code))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        time.sleep(0.2)
        change()
        changed_at = time.monotonic()
        time.sleep(1.0)
        after = [_fresh(b, WHOAMI, key) for _ in range(20)]
    finally:
        stop.set()
        watcher.join(30)
    for response in after:
        assert response.status_code == 401, response.text
        assert response.json()["error_code"] == "UNAUTHENTICATED"
    late = [sent for sent, status in seen if sent >= changed_at + 1.0]
    assert all(status == 401 for sent, status in seen if sent >= changed_at + 1.0), late
    accepted_after = [
        sent - changed_at for sent, status in seen if status == 200 and sent >= changed_at
    ]
    return max(accepted_after, default=0.0), len(seen)


def test_revoked_through_a_is_refused_by_every_worker_of_b_within_one_second(replicas):
    a, b, _ = replicas
    key = a.create_key("erin")
    key_id = _fresh(a, WHOAMI, key).json()["key_id"]

    def revoke():
        response = _fresh(a, KEYS + "/revoke", a.admin_key, "POST", json={"key_id": key_id})
        assert response.status_code == 200, response.text

    stale, watched = _refused_everywhere_within_a_second(b, key, revoke)
    print(f"\nREST revoke on A: B accepted the key for at most {stale:.3f}s ({watched} watched)")


def test_rotated_through_a_old_key_refused_on_b_new_key_works_at_once(replicas):
    a, b, _ = replicas
    key = a.create_key("frank")
    key_id = _fresh(a, WHOAMI, key).json()["key_id"]
    rotated = {}

    def rotate():
        response = _fresh(a, KEYS + "/rotate", a.admin_key, "POST", json={"key_id": key_id})
        assert response.status_code == 200, response.text
        rotated["key"] = response.json()["key"]
        assert _fresh(b, WHOAMI, rotated["key"]).json()["username"] == "frank"

    stale, watched = _refused_everywhere_within_a_second(b, key, rotate)
    print(
        f"\nREST rotate on A: B accepted the old key for at most {stale:.3f}s ({watched} watched)"
    )


@pytest.mark.parametrize("command", ["revoke", "rotate"])
def test_revoked_or_rotated_by_cli_on_the_database_is_refused_by_b_within_one_second(
    replicas, command
):
    a, b, _ = replicas
    key = a.create_key(f"grace-{command}")
    key_id = _fresh(a, WHOAMI, key).json()["key_id"]
    printed = {}

    def change():
        printed["out"] = a.cli("keys", command, key_id).stdout.strip()

    stale, watched = _refused_everywhere_within_a_second(b, key, change)
    if command == "rotate":  # the replacement works on B at once
        assert _fresh(b, WHOAMI, printed["out"]).json()["username"] == f"grace-{command}"
    print(
        f"\nCLI {command}: B accepted the old key for at most {stale:.3f}s after the CLI "
        f"returned ({watched} watched)"
    )


def test_artifact_logged_through_a_is_read_through_b(replicas, tracking):
    a, b, s3 = replicas
    key = a.create_key("heidi")
    with tracking(a, key) as mlflow:
        mlflow.set_experiment(f"replica-artifacts-{time.time_ns()}")
        with mlflow.start_run() as run:
            mlflow.log_text("written through A", "notes/a.txt")
    assert any(k.endswith("notes/a.txt") for k in s3.objects("replicas/"))
    with tracking(b, key) as mlflow:
        text = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/notes/a.txt")
    assert text == "written through A"


CLIENT = textwrap.dedent(
    """
    import sys, time
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    name, half = sys.argv[1], int(sys.argv[2])
    client = MlflowClient()
    experiment_id = client.create_experiment(f"load-{name}-{time.time_ns()}")
    run_id = client.create_run(experiment_id).info.run_id
    now = int(time.time() * 1000)
    for start in range(0, half, 100):
        client.log_batch(run_id, metrics=[
            Metric("batched", step * 0.5, now, step) for step in range(start, start + 100)
        ])
    for step in range(half):
        client.log_metric(run_id, "single", step * 0.25, timestamp=now, step=step)
    print(run_id)
    """
)


def test_eight_concurrent_clients_lose_no_metric(replicas, tracking):
    a, b, _ = replicas
    users = [f"load-user-{i}" for i in range(CLIENTS)]
    keys = {user: a.create_key(user) for user in users}
    half = PER_CLIENT // 2
    started = time.monotonic()
    procs = {}
    for i, user in enumerate(users):
        target = (a, b)[i % 2]  # a load balancer: half the clients on each replica
        env = clean_env(
            MLFLOW_TRACKING_URI=target.url,
            MLFLOW_TRACKING_TOKEN=keys[user],
            MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",  # a failed request must fail the client
        )
        procs[user] = subprocess.Popen(
            [sys.executable, "-c", CLIENT, user, str(half)],
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    runs = {}
    for user, proc in procs.items():
        out, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, f"{user} failed:\n{err[-3000:]}"
        runs[user] = out.strip().splitlines()[-1]
    elapsed = time.monotonic() - started

    total = 0
    for user, run_id in runs.items():
        with tracking(b, keys[user]) as mlflow:
            client = mlflow.MlflowClient()
            batched = client.get_metric_history(run_id, "batched")
            single = client.get_metric_history(run_id, "single")
        assert sorted(m.step for m in batched) == list(range(half))
        assert sorted(m.step for m in single) == list(range(half))
        assert all(m.value == m.step * 0.5 for m in batched)
        assert all(m.value == m.step * 0.25 for m in single)
        total += len(batched) + len(single)
    assert total == CLIENTS * PER_CLIENT
    requests_sent = CLIENTS * (half // 100 + half + 2)
    print(
        f"\n{CLIENTS} clients x {PER_CLIENT} metrics = {total} metrics counted back, "
        f"{requests_sent} requests in {elapsed:.1f}s ({requests_sent / elapsed:.0f} req/s)"
    )
    # Nothing failed on the servers either (the clients did not retry).
    for server in (a, b):
        assert '" 500 ' not in server.log_text() and '" 503 ' not in server.log_text()


# -- key policies across replicas ------------------------------------------------------------
def test_policies_hold_on_every_worker_of_the_other_replica(replicas):
    """IP allowlist, rotation overlap window, default lifetime and dormancy, each set through A
    and observed on fresh connections to B (both workers), on PostgreSQL."""
    from datetime import datetime, timedelta, timezone

    from mlflow_hokusai.store.clock import utcnow
    from mlflow_hokusai.store.models import ApiKey
    from tests.security.raw import send

    a, b, _ = replicas
    made = _fresh(
        a,
        KEYS + "/create",
        a.admin_key,
        "POST",
        json={"username": "policy-pat", "allowed_ips": ["127.0.0.2"]},
    )
    assert made.status_code == 200, made.text
    pinned, record = made.json()["key"], made.json()["api_key"]
    expires = datetime.fromisoformat(record["expires_at"]) - datetime.now(timezone.utc)
    assert timedelta(days=89, hours=23) < expires <= timedelta(days=90)  # the default lifetime
    auth = [("Authorization", f"Bearer {pinned}")]
    for _ in range(8):
        assert send(b.url, "GET", WHOAMI, auth, source="127.0.0.2").status == 200
        assert send(b.url, "GET", WHOAMI, auth, source="127.0.0.1").status == 403

    # Rotation with a 3 s window through A: the old key works on B until it ends, then not.
    key = a.create_key("policy-quinn")
    key_id = _fresh(a, WHOAMI, key).json()["key_id"]
    body = {"key_id": key_id, "grace_seconds": 3}
    rotated = _fresh(a, KEYS + "/rotate", a.admin_key, "POST", json=body)
    assert rotated.status_code == 200, rotated.text
    ends = datetime.fromisoformat(rotated.json()["replaced"]["rotation_ends_at"])
    during = []
    while datetime.now(timezone.utc) < ends - timedelta(seconds=0.5):
        during.append(_fresh(b, WHOAMI, key).status_code)
    assert during and set(during) == {200}
    time.sleep(max(0.0, (ends - datetime.now(timezone.utc)).total_seconds()) + 0.1)
    after = [_fresh(b, WHOAMI, key) for _ in range(8)]
    assert {r.status_code for r in after} == {401}
    assert "use its replacement" in after[0].json()["message"]
    assert _fresh(b, WHOAMI, rotated.json()["key"]).status_code == 200

    # Dormancy: the key looks unused for 31 days; B refuses it within the cache bound.
    made = _fresh(a, KEYS + "/create", a.admin_key, "POST", json={"username": "policy-rory"})
    idle, idle_id = made.json()["key"], made.json()["api_key"]["id"]  # never used: no touch
    engine = sa.create_engine(a.database_uri)
    try:
        with engine.begin() as conn:
            old = utcnow() - timedelta(days=31)
            conn.execute(
                sa.update(ApiKey)
                .where(ApiKey.id == idle_id)
                .values(created_at=old, last_used_at=old)
            )
    finally:
        engine.dispose()
    time.sleep(1.1)
    refused = [_fresh(b, WHOAMI, idle) for _ in range(8)]
    assert {r.status_code for r in refused} == {401}
    assert "dormant" in refused[0].json()["message"]


# -- rate limits across replicas ---------------------------------------------------------------
@pytest.fixture(scope="module")
def redis_replicas(replicas, redis_server, tmp_path_factory):
    """Two more replicas (2 workers each) on the same database, counting rate limits in Redis
    (HOKUSAI_RATE_LIMIT_STORAGE) instead of PostgreSQL."""
    a = replicas[0]
    env = {**a.extra_env, "HOKUSAI_RATE_LIMIT_STORAGE": redis_server.url}
    servers = [
        Server(
            str(tmp_path_factory.mktemp(name)),
            workers=2,
            env=env,
            backend_store_uri=a.backend_store_uri,
            args=a.args,
        )
        for name in ("redis-replica-c", "redis-replica-d")
    ]
    try:
        for server in servers:
            server.launch()
        for server in servers:
            server.wait_ready(300)
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.mark.parametrize("store", ["postgresql", "redis"])
def test_a_rate_limit_holds_across_two_replicas_of_two_workers(request, store):
    """Eight clients, four on each replica, hammer one 40/second key for 4.5 s: no interval of
    a second surely admits more than the limit, and at least 95 % of it is usable."""
    from tests.rate_load import analyse, hammer

    a, b = request.getfixturevalue("replicas" if store == "postgresql" else "redis_replicas")[:2]
    body = {"username": f"rate-{store}", "rate_limit": "40/second"}
    made = _fresh(a, KEYS + "/create", a.admin_key, "POST", json=body)
    assert made.status_code == 200, made.text
    figures = analyse(hammer([a.url, b.url], made.json()["key"], 8, 4.5), 40, 1.0)
    assert figures["statuses"] == [200, 429], figures
    assert figures["surely_in_window"] <= 40, figures  # what the server surely decided
    assert figures["usable"] >= 0.95, figures


def test_what_a_user_creates_on_a_works_on_b_at_once(replicas):
    """Experiments, runs, registered models and versions made through one replica are used at
    once through the other (whose workers cached the user's grants a moment before): none of
    30 create-then-use flows is refused (tests/test_fresh_refusals.py)."""
    a, b, _ = replicas
    key = a.create_key("fresh-across-replicas")
    assert create_then_use(a.url, b.url, key) == {}
