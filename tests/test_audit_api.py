"""The audit trail over REST (``GET …/mlflow/hokusai/audit/list``), the app client and the CLI's
online mode, against a real server: who sees what, filters, pagination, and 400s that name the
parameter."""

import json
import subprocess
import sys
import time

import mlflow
import mlflow.server
import pytest

from tests.server import clean_env

KEYS = "/api/2.0/mlflow/hokusai/api-keys"
AUDIT = "/api/2.0/mlflow/hokusai/audit/list"
PATHS = [AUDIT, "/ajax-api/2.0/mlflow/hokusai/audit/list", "/api/mlflow" + AUDIT]
FIELDS = {"id", "time", "event", "actor", "username", "key_id", "address", "detail"}


def _key(server, username, by=None, **body) -> tuple[str, str]:
    made = server.post(
        f"{KEYS}/create", by or server.admin_key, json={"username": username, **body}
    )
    assert made.status_code == 200, made.text
    return made.json()["key"], made.json()["api_key"]["id"]


def _events(server, key, path=AUDIT, **params) -> list[dict]:
    """Every page, following next_page_token."""
    found, token = [], None
    while True:
        page = server.get(path, key, params={**params, **({"page_token": token} if token else {})})
        assert page.status_code == 200, page.text
        body = page.json()
        assert set(body) <= {"events", "next_page_token"}
        found += body["events"]
        token = body.get("next_page_token")
        if not token:
            return found


@pytest.fixture(scope="module")
def people(server):
    """Two users with two keys each; alice rotated and revoked one of hers herself."""
    stamp = time.time_ns()
    alice, bob = f"audit-alice-{stamp}", f"audit-bob-{stamp}"
    alice_key, alice_id = _key(server, alice, name="laptop")
    spare, spare_id = _key(server, alice, by=alice_key, name="spare")
    rotated = server.post(f"{KEYS}/rotate", alice_key, json={"key_id": spare_id}).json()
    server.post(f"{KEYS}/revoke", alice_key, json={"key_id": rotated["api_key"]["id"]})
    bob_key, bob_id = _key(server, bob)
    read_key, _ = _key(server, bob, scope="read")
    return {
        "alice": (alice, alice_key, alice_id),
        "bob": (bob, bob_key, bob_id),
        "bob-read": (bob, read_key, None),
        "secrets": [alice_key, spare, rotated["key"], bob_key, read_key],
    }


@pytest.mark.parametrize("path", PATHS)
def test_an_admin_sees_every_users_events(server, people, path):
    alice, bob = people["alice"][0], people["bob"][0]
    events = _events(server, server.admin_key, path, since="1h")
    users = {e["username"] for e in events}
    assert {alice, bob} <= users
    for event in events:
        assert set(event) == FIELDS, event
    text = json.dumps(events)
    assert not any(secret in text for secret in people["secrets"])  # ids only, never keys
    mine = _events(server, server.admin_key, path, username=alice)
    assert mine and all(alice in (e["username"], e["actor"]) for e in mine)
    assert [e["event"] for e in mine][:4] == ["created", "created", "rotated", "revoked"]
    created = next(e for e in mine if e["event"] == "created")
    assert created["actor"] == "admin" and created["address"] == "127.0.0.1"


def test_anyone_else_sees_only_the_events_of_their_own_keys(server, people):
    alice, alice_key, _ = people["alice"]
    bob = people["bob"][0]
    events = _events(server, alice_key)
    assert events and {e["username"] for e in events} == {alice}
    assert _events(server, alice_key, username=alice) == events
    refused = server.get(AUDIT, alice_key, params={"username": bob})
    assert refused.status_code == 403, refused.text
    assert refused.json() == {
        "error_code": "PERMISSION_DENIED",
        "message": "Only admins can see the audit events of other users.",
    }
    # A read-only key may read its owner's trail (it is a GET).
    bob_events = _events(server, people["bob-read"][1])
    assert bob_events and {e["username"] for e in bob_events} == {bob}


def test_filters_event_key_and_since(server, people):
    alice, alice_key, alice_id = people["alice"]
    created = _events(server, alice_key, event="created")
    assert created and {e["event"] for e in created} == {"created"}
    by_key = _events(server, server.admin_key, key_id=alice_id)
    assert by_key and {e["key_id"] for e in by_key} == {alice_id}
    assert _events(server, alice_key, since="2999-01-01") == []
    assert _events(server, alice_key, since="2000-01-01T00:00:00Z") == _events(server, alice_key)
    assert _events(server, alice_key, since="1h") == _events(server, alice_key)


def test_pages_are_complete_and_in_order(server, people):
    alice_key = people["alice"][1]
    whole = server.get(AUDIT, alice_key, params={"max_results": 1000}).json()
    assert "next_page_token" not in whole
    pages, token = [], None
    while True:
        params = {"max_results": 2, **({"page_token": token} if token else {})}
        body = server.get(AUDIT, alice_key, params=params).json()
        assert 1 <= len(body["events"]) <= 2
        pages.append(body["events"])
        token = body.get("next_page_token")
        if not token:
            break
    assert len(pages) >= 2
    flat = [e for page in pages for e in page]
    assert flat == whole["events"]
    assert [e["id"] for e in flat] == sorted(e["id"] for e in flat)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"max_results": "0"}, "max_results"),
        ({"max_results": "1001"}, "max_results"),
        ({"max_results": "ten"}, "max_results"),
        ({"event": "hacked"}, "event"),
        ({"since": "last tuesday"}, "since"),
        ({"page_token": "bm90LWEtdG9rZW4"}, "page_token"),
        ({"page_token": "%%%"}, "page_token"),
        ({"user": "x"}, "user"),
    ],
)
def test_bad_parameters_are_400s_that_name_them(server, people, params, field):
    response = server.get(AUDIT, people["alice"][1], params=params)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error_code"] == "INVALID_PARAMETER_VALUE"
    assert f"'{field}'" in body["message"]


def test_no_key_no_trail(server):
    response = server.get(AUDIT)
    assert response.status_code == 401
    assert response.json()["error_code"] == "UNAUTHENTICATED"


def test_the_app_client_pages_through_the_trail(server, people, monkeypatch):
    alice, alice_key, _ = people["alice"]
    for name in ("MLFLOW_TRACKING_AUTH", "HOKUSAI_API_KEY", "MLFLOW_TRACKING_USERNAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", alice_key)
    client = mlflow.server.get_app_client("hokusai", tracking_uri=server.url + "/api/mlflow")
    first, token = client.list_audit_events(max_results=1)
    assert len(first) == 1 and token
    every = list(client.iter_audit_events())
    assert every[0] == first[0] and every == _events(server, alice_key)
    with pytest.raises(mlflow.exceptions.MlflowException, match="Only admins"):
        client.list_audit_events(username="someone-else")


def test_the_cli_online_lists_what_the_server_lets_the_key_see(server, people):
    alice, alice_key, _ = people["alice"]

    def online(*args, key):
        return subprocess.run(
            [sys.executable, "-m", "mlflow_hokusai.cli", "audit", "list", *args]
            + ["--tracking-uri", server.url],
            env=clean_env(HOKUSAI_API_KEY=key),
            capture_output=True,
            text=True,
            timeout=120,
            cwd=server.workdir,
        )

    listed = online("--format", "json", key=alice_key)
    assert listed.returncode == 0, listed.stderr
    records = json.loads(listed.stdout)
    assert {r["username"] for r in records} == {alice}
    offline = json.loads(server.cli("audit", "list", "--format", "json", "--user", alice).stdout)
    mine = [r for r in offline if r["username"] == alice]
    assert records == mine  # the same rows, the same shape (the address as "address", as over REST)
    newest = json.loads(online("--format", "json", "--limit", "2", key=alice_key).stdout)
    assert newest == records[-2:]
    refused = online("--user", "someone-else", key=alice_key)
    assert refused.returncode != 0 and "Only admins" in refused.stderr
    by_admin = online("--user", alice, "--event", "rotated", key=server.admin_key)
    assert by_admin.returncode == 0 and "rotated" in by_admin.stdout
