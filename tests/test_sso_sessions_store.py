"""Sessions in the key database (migration 0011, ``store/sessions.py``, ``auth/sessions.py``)
and ``mlflow-hokusai sessions list|revoke``, on a real SQLite file; no server."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta

import sqlalchemy as sa
from alembic import command

from mlflow_hokusai.auth.sessions import SessionManager, looks_like_session
from mlflow_hokusai.keys.audit import AuditLog
from mlflow_hokusai.store.audit import AuditStore
from mlflow_hokusai.store.clock import utcnow
from mlflow_hokusai.store.engine import _alembic_config, get_engine, upgrade
from mlflow_hokusai.store.models import mlflow_users
from mlflow_hokusai.store.sessions import Attempt, SessionStore, digest_of
from tests.helpers import key_database
from tests.server import clean_env


def manager(engine, **kwargs) -> SessionManager:
    options = {"lifetime": 3600, "idle_timeout": 600, **kwargs}
    return SessionManager(SessionStore(engine), AuditLog(AuditStore(engine)), **options)


def events(engine) -> list[tuple[str, str, str]]:
    return [(r.event, r.username, r.detail) for r in AuditStore(engine).list()]


def test_upgrade_from_0010_adds_the_session_tables(tmp_path):
    engine = get_engine(f"sqlite:///{tmp_path / 'old.db'}")
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "0010")
    assert not sa.inspect(engine).has_table("hokusai_sessions")
    upgrade(engine)
    tables = set(sa.inspect(engine).get_table_names())
    assert {"hokusai_sessions", "hokusai_sign_in_attempts"} <= tables
    columns = {c["name"] for c in sa.inspect(engine).get_columns("hokusai_sessions")}
    assert {"digest", "username", "last_seen_at", "expires_at", "revoked_at", "user_agent"} <= (
        columns
    )
    upgrade(engine)  # idempotent


def test_a_session_is_stored_as_a_digest_and_judged(tmp_path):
    engine = key_database(tmp_path / "keys.db", users=("alice",))
    sessions = manager(engine)
    opened = sessions.open("alice", 1, source="10.0.0.1", user_agent="pytest")
    assert looks_like_session(opened.secret)
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT id, digest FROM hokusai_sessions")).all()
    assert stored == [(opened.session_id, digest_of(opened.secret))]
    assert opened.secret not in json.dumps([list(r) for r in stored])

    record = sessions.lookup(opened.secret)
    assert record.username == "alice" and record.user_is_admin is False
    assert sessions.refusal(record) is None
    assert "unknown session" in sessions.refusal(sessions.lookup("x" * 43))

    idle = manager(engine, idle_timeout=60)
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE hokusai_sessions SET last_seen_at = :t"),
            {"t": utcnow() - timedelta(seconds=61)},
        )
    assert "unused for too long" in idle.refusal(idle.lookup(opened.secret))

    with engine.begin() as conn:
        conn.execute(mlflow_users.delete().where(mlflow_users.c.username == "alice"))
    assert "no longer exists" in sessions.refusal(sessions.lookup(opened.secret))


def test_sign_out_and_revocation_are_audited(tmp_path):
    engine = key_database(tmp_path / "keys.db", users=("alice", "bob"))
    sessions = manager(engine)
    first = sessions.open("alice", 1, source="10.0.0.1", user_agent=None)
    second = sessions.open("alice", 1, source="10.0.0.2", user_agent=None)
    bobs = sessions.open("bob", 2, source=None, user_agent=None)

    assert sessions.sign_out(first.secret, "10.0.0.1").id == first.session_id
    assert sessions.sign_out(first.secret, "10.0.0.1") is None  # once
    assert "signed out or revoked" in sessions.refusal(sessions.lookup(first.secret))
    revoked = sessions.revoke("admin", "10.9.9.9", username="alice", why="left the team")
    assert [r.id for r in revoked] == [second.session_id]
    assert sessions.refusal(sessions.lookup(bobs.secret)) is None
    assert [r.id for r in sessions.list()] == [bobs.session_id]
    assert events(engine) == [
        ("signed-in", "alice", f"session {first.session_id}"),
        ("signed-in", "alice", f"session {second.session_id}"),
        ("signed-in", "bob", f"session {bobs.session_id}"),
        ("signed-out", "alice", f"session {first.session_id}"),
        ("session-revoked", "alice", f"session {second.session_id}: left the team"),
    ]


def test_a_sign_in_attempt_is_taken_once(tmp_path):
    store = SessionStore(key_database(tmp_path / "keys.db"))
    now = utcnow()
    store.start_sign_in("d1", Attempt("n", "v", "/#/", ""), now + timedelta(minutes=10))
    store.start_sign_in("d2", Attempt("n", "v", "/", ""), now - timedelta(seconds=1))
    assert store.take_sign_in("d1", now) == Attempt("n", "v", "/#/", "")
    assert store.take_sign_in("d1", now) is None  # a replayed state finds nothing
    assert store.take_sign_in("d2", now) is None  # expired


def test_ended_sessions_and_abandoned_sign_ins_are_purged(tmp_path):
    engine = key_database(tmp_path / "keys.db", users=("alice",))
    store = SessionStore(engine)
    now = utcnow()
    old = store.add("d-old", "alice", 1, now=now - timedelta(days=9), lifetime=3600)
    live = store.add("d-live", "alice", 1, now=now, lifetime=3600)
    store.start_sign_in("s-old", Attempt("n", "v", "/", ""), now - timedelta(seconds=1))
    store.start_sign_in("s-new", Attempt("n", "v", "/", ""), now + timedelta(minutes=5))
    assert store.purge(now - timedelta(days=7), now) == 1
    assert store.get(old) is None and store.get(live) is not None
    assert store.take_sign_in("s-new", now) is not None
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM hokusai_sign_in_attempts")).scalar() == 0


def run_cli(tmp_path, *args, ok=True):
    uri = f"sqlite:///{tmp_path / 'keys.db'}"
    result = subprocess.run(
        [sys.executable, "-m", "mlflow_hokusai.cli", "sessions", *args, "--database-uri", uri],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (result.returncode == 0) == ok, result.stderr
    return result


def test_the_sessions_commands(tmp_path):
    engine = key_database(tmp_path / "keys.db", users=("alice", "bob"))
    sessions = manager(engine)
    alices = sessions.open("alice", 1, source="10.0.0.1", user_agent=None)
    bobs = sessions.open("bob", 2, source="10.0.0.2", user_agent=None)

    listed = json.loads(run_cli(tmp_path, "list", "--format", "json").stdout)
    assert {(s["id"], s["username"], s["status"]) for s in listed} == {
        (alices.session_id, "alice", "active"),
        (bobs.session_id, "bob", "active"),
    }
    table = run_cli(tmp_path, "list", "--user", "bob").stdout
    assert bobs.session_id in table and alices.session_id not in table

    revoked = run_cli(tmp_path, "revoke", alices.session_id)
    assert f"Revoked session {alices.session_id} of 'alice'" in revoked.stderr
    assert "No live session" in run_cli(tmp_path, "revoke", alices.session_id, ok=False).stderr
    assert "not both" in run_cli(tmp_path, "revoke", "x", "--user", "bob", ok=False).stderr
    run_cli(tmp_path, "revoke", "--user", "bob")
    assert json.loads(run_cli(tmp_path, "list", "--format", "json").stdout) == []
    everything = json.loads(run_cli(tmp_path, "list", "--all", "--format", "json").stdout)
    assert {s["status"] for s in everything} == {"revoked"}
    revocations = [e for e in events(engine) if e[0] == "session-revoked"]
    assert len(revocations) == 2
