"""Key event webhooks against real servers (``mlflow server --app-name hokusai``, 2 workers):
a receiver on loopback checks every signature as MLflow's documentation tells receivers to;
created, rotated and revoked events arrive with their actor and reason; a key made to expire
within a day gets its notice; a receiver down for 30 s then gets every event exactly once; a
server restarted mid-stream sends nothing twice; two replicas on PostgreSQL send each event
once; ``mlflow-hokusai webhooks test`` pings every receiver."""

from __future__ import annotations

import collections
import subprocess
import sys
import time

import pytest
import requests
import sqlalchemy as sa

from mlflow_hokusai.keys.format import generate_key
from tests.server import Server, clean_env, free_port
from tests.webhook_receiver import Receiver

SECRET = "webhook-secret-for-the-tests-0123456789"
KEYS = "/api/2.0/mlflow/hokusai/api-keys"
AUDIT = "/api/2.0/mlflow/hokusai/audit/list"


def _env(url: str, **extra) -> dict:
    return {
        "HOKUSAI_KEY_WEBHOOK_URLS": url,
        "HOKUSAI_KEY_WEBHOOK_SECRET": SECRET,
        "HOKUSAI_KEY_WEBHOOK_CHECK_INTERVAL": "1s",
        "HOKUSAI_KEY_WEBHOOK_MAX_BACKOFF": "2s",
        **extra,
    }


def _call(server, key, path, body=None, method="POST", **kwargs):
    response = requests.request(
        method,
        server.url + path,
        json=body,
        headers={"Authorization": f"Bearer {key}", "Connection": "close"},
        timeout=30,
        **kwargs,
    )
    assert response.status_code == 200, response.text
    return response.json()


def _create(server, key, **body) -> tuple[str, str]:
    made = _call(server, key, f"{KEYS}/create", body)
    return made["key"], made["api_key"]["id"]


def _once_each(receiver) -> list[str]:
    """Every delivery's id, checked: signed right, each id once, header = body."""
    got = receiver.got()
    assert all(d.valid for d in got), [d.headers for d in got if not d.valid]
    ids = [d.delivery_id for d in got]
    assert all(d.payload["delivery_id"] == d.delivery_id for d in got)
    repeated = [i for i, n in collections.Counter(ids).items() if n > 1]
    assert not repeated, f"sent more than once: {repeated}"
    return ids


def _quiet(receiver, seconds: float = 6.0) -> None:
    """Give a sender time to send anything more (a duplicate would show up then)."""
    time.sleep(seconds)


@pytest.fixture(scope="module")
def hooked(tmp_path_factory):
    receiver = Receiver(SECRET).start()
    server = Server(str(tmp_path_factory.mktemp("webhooks")), env=_env(receiver.url)).start()
    yield server, receiver
    server.stop()
    receiver.stop()


def test_key_events_arrive_signed_with_their_actor_and_reason(hooked):
    server, receiver = hooked
    admin = server.admin_key
    alice_key, first = _create(server, admin, username="alice", name="laptop")
    _, second = _create(server, alice_key, name="ci")
    rotated = _call(server, alice_key, f"{KEYS}/rotate", {"key_id": second})
    third = rotated["api_key"]["id"]
    _call(server, alice_key, f"{KEYS}/revoke", {"key_id": third})
    _call(server, admin, f"{KEYS}/revoke", {"key_id": first})
    bob_key, bobs = _create(server, admin, username="bob")
    _call(server, admin, "/api/2.0/mlflow/users/delete", {"username": "bob"}, method="DELETE")

    expected = [
        ("created", first, "admin", None),
        ("created", second, "alice", None),
        ("rotated", second, "alice", None),
        ("revoked", third, "alice", "user"),
        ("revoked", first, "admin", "admin"),
        ("created", bobs, "admin", None),
        ("revoked", bobs, "admin", "owner-deleted"),
    ]
    receiver.wait_for(len(expected))
    _quiet(receiver)
    _once_each(receiver)
    got = [d.payload for d in receiver.got() if d.payload["event"] != "expiring"]
    data = [p["data"] for p in got]
    seen = [
        (p["event"], p["data"]["key_id"], p["data"]["actor"], p["data"].get("reason")) for p in got
    ]
    assert seen == expected
    assert got[2]["data"]["replaced_by"] == third and got[2]["data"]["works_until"]
    assert data[0]["owner"] == "alice" and data[0]["name"] == "laptop"
    assert data[0]["key_prefix"] == alice_key[:12] and data[0]["expires_at"] is None
    bodies = "".join(d.body for d in receiver.got())
    for key in (alice_key, rotated["key"], bob_key, admin):
        assert key not in bodies and key[12:] not in bodies
    # the audit trail holds the same events, in the same order
    audited = _call(server, admin, AUDIT, method="GET", params={"max_results": 1000})["events"]
    lifecycle = [
        (e["event"], e["key_id"])
        for e in audited
        if e["event"] in ("created", "rotated", "revoked")
    ]
    assert lifecycle == [(e, k) for e, k, _, _ in expected]


def test_a_key_made_to_expire_soon_gets_its_notice_once(hooked):
    """A key created to expire in 1 day is inside its last day: the 1-day notice, not the
    7-day one; a 3-day key gets the 7-day one; a 30-day key none yet. No clock is mocked."""
    server, receiver = hooked
    admin = server.admin_key
    _, day = _create(server, admin, username="carol", expires_in_days=1)
    _, days3 = _create(server, admin, username="carol", expires_in_days=3)
    _, days30 = _create(server, admin, username="carol", expires_in_days=30)
    receiver.wait_for(2, "expiring")
    _quiet(receiver, 5.0)  # five more checks (1 s apart): still once each
    _once_each(receiver)
    notices = {d.payload["data"]["key_id"]: d.payload for d in receiver.got("expiring")}
    assert set(notices) == {day, days3}
    assert notices[day]["data"]["within_days"] == 1 and notices[days3]["data"]["within_days"] == 7
    assert notices[day]["data"]["actor"] == "server" and notices[day]["data"]["owner"] == "carol"
    audited = _call(server, admin, AUDIT, method="GET", params={"event": "expiring"})["events"]
    assert sorted(e["key_id"] for e in audited) == sorted([day, days3])
    assert days30 not in notices


def test_the_cli_pings_every_receiver(hooked, tmp_path):
    server, receiver = hooked
    second = Receiver(SECRET).start()
    try:
        env = clean_env(**_env(f"{receiver.url},{second.url}"))
        result = subprocess.run(
            [sys.executable, "-m", "mlflow_hokusai.cli", "webhooks", "test"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert f"{receiver.url}  HTTP 200" in result.stdout
        assert f"{second.url}  HTTP 200" in result.stdout
        for each in (receiver, second):
            (ping,) = each.got("ping")
            assert ping.valid and ping.payload["data"]["message"]
    finally:
        second.stop()
    # a receiver that is not there: its error, and exit status 1
    down = f"http://127.0.0.1:{free_port()}/hooks"
    result = subprocess.run(
        [sys.executable, "-m", "mlflow_hokusai.cli", "webhooks", "test"],
        env=clean_env(**_env(down)),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "could not reach the receiver  (failed)" in result.stdout
    # none configured: a clear error
    result = subprocess.run(
        [sys.executable, "-m", "mlflow_hokusai.cli", "webhooks", "test"],
        env=clean_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "No key webhook is configured" in result.stderr


def test_an_http_url_to_another_host_stops_the_server_with_a_clear_message(tmp_path):
    server = Server(str(tmp_path), env=_env("http://hooks.example.com/keys"), workers=1)
    try:
        with pytest.raises(RuntimeError):
            server.start(timeout=120)
        assert (
            "HOKUSAI_KEY_WEBHOOK_URLS must be https URLs separated by commas" in server.log_text()
        )
        assert "uses http to hooks.example.com, which is not this machine" in server.log_text()
    finally:
        server.stop()


def test_a_receiver_down_for_30_s_then_gets_every_event_exactly_once(tmp_path):
    receiver = Receiver(SECRET)  # its port is chosen, but nothing listens there yet
    server = Server(str(tmp_path), env=_env(receiver.url)).start()
    try:
        admin = server.admin_key
        made = [_create(server, admin, username="dan", name=f"k{i}")[1] for i in range(3)]
        _call(server, admin, f"{KEYS}/revoke", {"key_id": made[0]})
        server.create_key("dan")  # the offline CLI's events go the same way
        time.sleep(30)  # the receiver is down
        receiver.start()
        receiver.wait_for(5)
        _quiet(receiver)
        ids = _once_each(receiver)
        assert len(ids) == 5
        assert [d.payload["event"] for d in receiver.got()] == ["created"] * 3 + [
            "revoked",
            "created",
        ]
        assert "Key webhooks: http://127.0.0.1" in server.log_text()  # the failures were logged
    finally:
        server.stop()
        receiver.stop()


def test_a_restart_mid_stream_sends_nothing_twice(tmp_path):
    receiver = Receiver(SECRET, delay=0.3).start()  # a slow receiver: a stream of sends
    server = Server(str(tmp_path), env=_env(receiver.url)).start()
    restarted = None
    try:
        admin = server.admin_key
        for i in range(20):
            _create(server, admin, username="erin", name=f"k{i}")
        receiver.wait_for(4)
        server.stop()  # SIGTERM to every process, mid-stream
        stopped_at = len(receiver.got())
        assert stopped_at < 20, "the stream ended before the restart; make it longer"
        restarted = Server(str(tmp_path), env=_env(receiver.url)).start()
        receiver.wait_for(20, timeout=240)
        _quiet(receiver)
        ids = _once_each(receiver)
        assert len(ids) == 20
        # the POST under way at the stop was finished and marked: no event was tried twice
        engine = sa.create_engine(server.database_uri)
        try:
            with engine.connect() as conn:
                attempts = conn.execute(sa.text("SELECT attempts FROM hokusai_webhook_outbox"))
                assert sorted(attempts.scalars()) == [1] * 20
        finally:
            engine.dispose()
    finally:
        for each in (server, restarted):
            if each is not None:
                each.stop()
        receiver.stop()


@pytest.mark.postgres
def test_two_replicas_on_postgresql_send_each_event_once(postgres, tmp_path_factory):
    uri = postgres.create_database("webhooks")
    subprocess.run(
        [sys.executable, "-m", "mlflow", "db", "upgrade", uri],
        check=True,
        capture_output=True,
        env=clean_env(),
        timeout=300,
    )
    receiver = Receiver(SECRET).start()
    env = _env(receiver.url, HOKUSAI_DATABASE_URI=uri, HOKUSAI_ADMIN_API_KEY=generate_key())
    servers = [
        Server(str(tmp_path_factory.mktemp(name)), env=env, backend_store_uri=uri)
        for name in ("replica-a", "replica-b")
    ]
    try:
        for server in servers:
            server.launch()
        for server in servers:
            server.wait_ready(300)
        admin = env["HOKUSAI_ADMIN_API_KEY"]
        made = []
        for i in range(10):
            made.append(_create(servers[i % 2], admin, username="fred", name=f"k{i}")[1])
        _create(servers[1], admin, username="fred", expires_in_days=1)
        receiver.wait_for(11, "created")
        receiver.wait_for(1, "expiring")
        _quiet(receiver)
        _once_each(receiver)
        assert len(receiver.got("expiring")) == 1
        # the replica sending stops; the other takes over and sends what is made next
        holder = _holder_of(servers, uri)
        holder.stop()
        other = servers[1 - servers.index(holder)]
        _call(other, admin, f"{KEYS}/revoke", {"key_id": made[0]})
        receiver.wait_for(1, "revoked")
        _quiet(receiver)
        _once_each(receiver)
    finally:
        for server in servers:
            server.stop()
        receiver.stop()


def _holder_of(servers, uri) -> Server:
    """The replica whose worker holds the sender's lease (by the pid in the holder's name)."""
    engine = sa.create_engine(uri)
    try:
        with engine.connect() as conn:
            holder = conn.execute(
                sa.text("SELECT holder FROM hokusai_leases WHERE name = 'key-webhooks'")
            ).scalar_one()
    finally:
        engine.dispose()
    pid = int(holder.split(":")[1])
    while pid > 1:
        for server in servers:
            if server.proc.pid == pid:
                return server
        with open(f"/proc/{pid}/stat") as stat:
            pid = int(stat.read().rsplit(")", 1)[1].split()[1])  # its parent
    raise AssertionError(f"no replica runs the lease holder {holder}")
