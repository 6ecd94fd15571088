"""Zero-config start, admin bootstrap, restarts and racing workers."""

import os
import stat

import sqlalchemy as sa

from mlflow_hokusai.keys.format import generate_key
from tests.server import Server

WHOAMI = "/api/2.0/mlflow/hokusai/whoami"


def _count(database_uri, sql):
    engine = sa.create_engine(database_uri)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql)).scalar_one()
    finally:
        engine.dispose()


def test_zero_config_start_with_four_racing_workers_then_restart(tmp_path):
    # No HOKUSAI_* or MLFLOW_* variable at all (Server strips them), MLflow's default 4 workers.
    server = Server(str(tmp_path), workers=4)
    with server:
        key_file = tmp_path / "hokusai_admin_key"
        assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(tmp_path / "hokusai_admin_password").st_mode) == 0o600
        key = server.admin_key
        log = server.log_text()
        assert str(key_file) in log and key not in log
        password = (tmp_path / "hokusai_admin_password").read_text().strip()
        assert password not in log
        # One ready line for the whole server (not one per worker), naming the key's file.
        ready = [line for line in log.splitlines() if "mlflow-hokusai ready:" in line]
        assert len(ready) == 1 and ready[0].endswith(f"admin key in {key_file}"), ready
        me = server.get(WHOAMI, key).json()
        assert me["username"] == "admin" and me["is_admin"] is True
        # Every worker raced through start-up: still one admin, one key, one secret.
        assert _count(server.database_uri, "select count(*) from users where username='admin'") == 1
        assert _count(server.database_uri, "select count(*) from hokusai_api_keys") == 1
        assert _count(server.database_uri, "select count(*) from hokusai_settings") == 1
        secret = _count(server.database_uri, "select value from hokusai_settings")
    # A restart keeps the key, the secret and the admin; nothing new is generated.
    restarted = Server(str(tmp_path), workers=2)
    with restarted:
        assert restarted.get(WHOAMI, key).status_code == 200
        assert (tmp_path / "hokusai_admin_key").read_text().strip() == key
        assert _count(server.database_uri, "select count(*) from hokusai_api_keys") == 1
        assert _count(server.database_uri, "select value from hokusai_settings") == secret
        assert restarted.get(WHOAMI, auth=("admin", password)).status_code == 200
        assert restarted.log_text().count("mlflow-hokusai ready:") == 1


def test_admin_key_and_password_from_environment(tmp_path):
    key = generate_key()
    env = {"HOKUSAI_ADMIN_API_KEY": key, "MLFLOW_AUTH_ADMIN_PASSWORD": "a-Long-enough-passw0rd!"}
    with Server(str(tmp_path), workers=1, env=env) as server:
        assert not (tmp_path / "hokusai_admin_key").exists()
        assert not (tmp_path / "hokusai_admin_password").exists()
        assert server.get(WHOAMI, key).json()["is_admin"] is True
        assert server.get(WHOAMI, auth=("admin", "a-Long-enough-passw0rd!")).status_code == 200


def test_database_and_bootstrap_dir_settings(tmp_path):
    db_dir = tmp_path / "db"
    db_dir.mkdir()
    env = {"HOKUSAI_DATABASE_URI": f"sqlite:///{db_dir / 'keys.db'}"}
    with Server(str(tmp_path), workers=1, env=env) as server:
        key = (db_dir / "hokusai_admin_key").read_text().strip()
        assert server.get(WHOAMI, key).status_code == 200
        assert not (tmp_path / "hokusai_auth.db").exists()


def test_bad_configuration_fails_clearly(tmp_path):
    server = Server(str(tmp_path), workers=1, env={"HOKUSAI_URL_PREFIX": "api/mlflow"})
    try:
        server.start(timeout=60)
        raise AssertionError("the server started with an invalid prefix")
    except RuntimeError:
        assert "HOKUSAI_URL_PREFIX must be a plain absolute path" in server.log_text()
    finally:
        server.stop()


def test_gunicorn_runner_serves_wsgi_with_the_same_gate(tmp_path):
    args = ["--gunicorn-opts", "--timeout 120 --workers 2"]
    with Server(str(tmp_path), args=args) as server:
        key = server.admin_key
        assert server.get("/health").status_code == 200
        assert server.get("/version").status_code == 200
        denied = server.get("/api/2.0/mlflow/experiments/search")
        assert denied.status_code == 401 and denied.json()["error_code"] == "UNAUTHENTICATED"
        assert (
            server.get(
                "/api/mlflow/api/2.0/mlflow/experiments/search?max_results=5", key
            ).status_code
            == 200
        )
        assert server.get(WHOAMI, key).json()["username"] == "admin"
        user = server.create_key("wsgi-user")
        created = server.post("/api/2.0/mlflow/experiments/create", key, json={"name": "admins"})
        denied = server.post(
            "/api/2.0/mlflow/experiments/delete",
            user,
            json={"experiment_id": created.json()["experiment_id"]},
        )
        assert denied.status_code == 403 and denied.json()["error_code"] == "PERMISSION_DENIED"


def test_the_ready_line_waits_for_a_listening_socket_and_is_said_once(monkeypatch):
    import secrets
    import socket

    from mlflow_hokusai import bootstrap

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        # bound, as uvicorn's workers inherit it: connections are refused until it listens
        assert not bootstrap._listening([sock.fileno()])
        sock.listen()
        assert bootstrap._listening([sock.fileno()])
    monkeypatch.setenv(bootstrap.SERVER_RUN_VARIABLE, secrets.token_hex(8))
    assert bootstrap._first_ready() and not bootstrap._first_ready()  # later workers: silent


def test_old_ready_claims_are_swept_and_nothing_else(tmp_path):
    import os
    import time

    from mlflow_hokusai import bootstrap

    prefix = bootstrap.READY_CLAIM_PREFIX
    old, fresh, mine, other = (
        tmp_path / n for n in (f"{prefix}a", f"{prefix}b", f"{prefix}c", "x")
    )
    for path in (old, fresh, mine, other):
        path.write_bytes(b"")
    written = tmp_path / f"{prefix}d"
    written.write_text("not an empty claim")
    long_ago = time.time() - (bootstrap.READY_CLAIM_DAYS + 1) * 86400
    for path in (old, mine, other, written):
        os.utime(path, (long_ago, long_ago))
    bootstrap._sweep_ready_claims(str(tmp_path), keep=str(mine))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (fresh, mine, other, written)
    )
