"""Key management over REST against a real server: happy paths, 400/401/403/404, ownership,
rotation across workers, read keys managing keys, last use, and the audit trail."""

import json
import time

import pytest
import requests

from tests.helpers import insert_expired_key, key_id_of

API = "/api/2.0/mlflow/hokusai/api-keys"
PATHS = [API, "/ajax-api/2.0/mlflow/hokusai/api-keys", "/api/mlflow" + API]
WHOAMI = "/api/2.0/mlflow/hokusai/whoami"


def create(server, key, base=API, **body):
    return server.post(f"{base}/create", key, json=body)


def new_key(server, username, **body) -> tuple[str, str]:
    """(key, key id), made by the admin over REST (creates the user if missing)."""
    response = create(server, server.admin_key, username=username, **body)
    assert response.status_code == 200, response.text
    return response.json()["key"], response.json()["api_key"]["id"]


def audit(server, *args) -> list[dict]:
    return json.loads(server.cli("audit", "list", "--format", "json", *args).stdout)


@pytest.fixture(scope="module")
def alice(server):
    return new_key(server, "keys-alice", name="alice laptop")


@pytest.fixture(scope="module")
def bob(server):
    return new_key(server, "keys-bob")


@pytest.mark.parametrize("base", PATHS)
def test_lifecycle_on_every_path(server, alice, base):
    key, _ = alice
    made = create(server, key, base, name="ci", scope="read", expires_in_days=7)
    assert made.status_code == 200, made.text
    body = made.json()
    new, info = body["key"], body["api_key"]
    assert info["username"] == "keys-alice" and info["scope"] == "read" and info["name"] == "ci"
    assert info["status"] == "active" and info["expires_at"] and new.startswith(info["prefix"])
    assert server.get(WHOAMI, new).json()["scope"] == "read"

    listed = server.get(f"{base}/list", key)
    assert listed.status_code == 200
    assert info["id"] in [k["id"] for k in listed.json()["api_keys"]]
    assert new not in listed.text  # the plaintext only ever appears in create/rotate

    rotated = server.post(f"{base}/rotate", key, json={"key_id": info["id"]})
    assert rotated.status_code == 200, rotated.text
    replacement = rotated.json()
    assert replacement["replaced"]["status"] == "revoked"
    assert (replacement["api_key"]["name"], replacement["api_key"]["scope"]) == ("ci", "read")
    assert replacement["api_key"]["expires_at"]  # same lifetime policy
    assert server.get(WHOAMI, replacement["key"]).status_code == 200

    revoked = server.post(f"{base}/revoke", key, json={"key_id": replacement["api_key"]["id"]})
    assert revoked.status_code == 200 and revoked.json()["api_key"]["status"] == "revoked"
    again = server.post(f"{base}/revoke", key, json={"key_id": replacement["api_key"]["id"]})
    assert again.status_code == 200  # idempotent
    time.sleep(1.1)
    assert server.get(WHOAMI, replacement["key"]).status_code == 401


def test_create_for_self_defaults_to_a_write_key_that_never_expires(server, alice):
    made = create(server, alice[0])
    assert made.status_code == 200
    info = made.json()["api_key"]
    assert (info["username"], info["scope"], info["expires_at"]) == ("keys-alice", "write", None)


@pytest.mark.parametrize(
    "body, words",
    [
        ('{"scope": "admin"}', "'scope' must be one of"),
        ('{"expires_in_days": 0}', "between 1 and 3650"),
        ('{"expires_in_days": -5}', "between 1 and 3650"),
        ('{"expires_in_days": 3651}', "between 1 and 3650"),
        ('{"expires_in_days": 1.5}', "whole number of days"),
        ('{"expires_in_days": "30"}', "whole number of days"),
        ('{"expires_in_days": true}', "whole number of days"),
        (json.dumps({"name": "x" * 256}), "at most 255 characters"),
        ('{"name": 7}', "'name' must be a string"),
        ('{"scope": ["read"]}', "'scope' must be one of"),
        ('{"username": ""}', "'username' must not be empty"),
        ('{"nmae": "typo"}', "Unknown field"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
    ],
)
def test_bad_input_is_400_with_a_clear_message(server, alice, body, words):
    response = server.post(
        f"{API}/create", alice[0], data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert words in response.json()["message"]


def test_bad_input_on_list_revoke_rotate(server, alice):
    for path, body in [("revoke", {}), ("rotate", {"key_id": 5}), ("revoke", {"key_id": ""})]:
        response = server.post(f"{API}/{path}", alice[0], json=body)
        assert response.status_code == 400 and "'key_id' is required" in response.text
    for path in ("revoke", "rotate", "update"):  # the key for its id: never echoed
        response = server.post(f"{API}/{path}", alice[0], json={"key_id": alice[0]})
        assert response.status_code == 400 and alice[0] not in response.text
        assert alice[0][:12] + "…" in response.json()["message"], response.text
    response = server.get(f"{API}/list?all=maybe", alice[0])
    assert response.status_code == 400 and "'all' must be true or false" in response.text
    response = server.get(f"{API}/list?user=x", alice[0])
    assert response.status_code == 400 and "Unknown parameter" in response.text


@pytest.mark.parametrize(
    "method, op", [("POST", "create"), ("GET", "list"), ("POST", "revoke"), ("POST", "rotate")]
)
@pytest.mark.parametrize("credential", [None, "hk_live_garbage"])
def test_no_valid_key_is_401(server, method, op, credential):
    headers = {"Authorization": f"Bearer {credential}"} if credential else {}
    response = requests.request(
        method, f"{server.url}{API}/{op}", headers=headers, json={"key_id": "x"}, timeout=30
    )
    assert response.status_code == 401
    assert response.json()["error_code"] == "UNAUTHENTICATED"


def test_a_user_cannot_touch_another_users_keys(server, alice, bob):
    alice_key, alice_id = alice
    bob_key, _ = bob
    attempts = [
        server.get(f"{API}/list?username=keys-alice", bob_key),
        server.get(f"{API}/list?all=true", bob_key),
        server.post(f"{API}/revoke", bob_key, json={"key_id": alice_id}),
        server.post(f"{API}/rotate", bob_key, json={"key_id": alice_id}),
        create(server, bob_key, username="keys-alice"),
    ]
    for response in attempts:
        assert response.status_code == 403, response.text
        assert response.json()["error_code"] == "PERMISSION_DENIED"
    # Bob's own list holds only his keys, and Alice's key still works.
    assert {k["username"] for k in server.get(f"{API}/list", bob_key).json()["api_keys"]} == {
        "keys-bob"
    }
    assert server.get(WHOAMI, alice_key).status_code == 200


def test_unknown_key_id_is_404(server, alice):
    for op in ("revoke", "rotate"):
        response = server.post(f"{API}/{op}", alice[0], json={"key_id": "0123456789abcdef"})
        assert response.status_code == 404
        assert response.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"


def test_admin_manages_anyone(server, bob):
    admin = server.admin_key
    by_user = server.get(f"{API}/list?username=keys-bob", admin).json()["api_keys"]
    assert by_user and {k["username"] for k in by_user} == {"keys-bob"}
    everyone = server.get(f"{API}/list?all=true", admin).json()["api_keys"]
    assert {"keys-bob", "admin"} <= {k["username"] for k in everyone}
    # An admin creating a key for a user who does not exist creates the user.
    key, key_id = new_key(server, f"brand-new-{time.time_ns()}")
    assert server.get(WHOAMI, key).json()["is_admin"] is False
    assert server.post(f"{API}/revoke", admin, json={"key_id": key_id}).status_code == 200


def test_read_key_lists_but_cannot_change_keys(server, alice):
    read_key = create(server, alice[0], scope="read").json()["key"]
    assert server.get(f"{API}/list", read_key).status_code == 200
    assert server.get(WHOAMI, read_key).status_code == 200
    own_id = key_id_of(server, read_key)
    for response in [
        create(server, read_key, scope="write"),
        server.post(f"{API}/rotate", read_key, json={"key_id": own_id}),
        server.post(f"{API}/revoke", read_key, json={"key_id": own_id}),
    ]:
        assert response.status_code == 403
        assert "read-only" in response.json()["message"]


def test_rotate_invalidates_the_old_key_on_every_worker_within_one_second(server):
    key, key_id = new_key(server, "rotate-me")
    for _ in range(20):  # fresh connections spread over both workers and warm their caches
        assert server.get(WHOAMI, key).status_code == 200
    rotated = server.post(f"{API}/rotate", key, json={"key_id": key_id})
    assert rotated.status_code == 200
    time.sleep(1.0)
    assert [server.get(WHOAMI, key).status_code for _ in range(40)] == [401] * 40
    assert server.get(WHOAMI, rotated.json()["key"]).json()["username"] == "rotate-me"


def _last_used(server, key_id):
    keys = server.get(f"{API}/list?all=true", server.admin_key).json()["api_keys"]
    return next(k["last_used_at"] for k in keys if k["id"] == key_id)


def test_last_use_is_recorded_at_most_once_a_minute_per_worker(server):
    key, key_id = new_key(server, "last-use")
    assert _last_used(server, key_id) is None
    seen = set()
    for _ in range(4):  # requests in four different seconds...
        for _ in range(10):
            assert server.get(WHOAMI, key).status_code == 200
        time.sleep(1.1)
        seen.add(_last_used(server, key_id))
    deadline = time.monotonic() + 30
    while None in seen and len(seen) == 1 and time.monotonic() < deadline:
        time.sleep(0.5)  # the touch is written in the background
        seen.add(_last_used(server, key_id))
    # ... yet at most one recorded time per worker: no write per request.
    assert 1 <= len(seen - {None}) <= server.workers, seen


def test_audit_trail_records_every_event(server):
    user = f"audited-{time.time_ns()}"
    key, key_id = new_key(server, user, name="audited")
    read_key, read_id = new_key(server, user, scope="read")
    rotated = server.post(f"{API}/rotate", key, json={"key_id": key_id}).json()
    new_id = rotated["api_key"]["id"]
    server.post(f"{API}/revoke", rotated["key"], json={"key_id": new_id})
    expired = insert_expired_key(server.database_uri, user)
    time.sleep(1.1)
    # Refused uses, hammered: at most one row per key and event per worker and minute.
    for _ in range(15):
        assert (
            server.post(
                "/api/2.0/mlflow/experiments/create", read_key, json={"name": "nope"}
            ).status_code
            == 403
        )
        assert server.get(WHOAMI, key).status_code == 401  # rotated away: revoked
        assert server.get(WHOAMI, expired).status_code == 401
    time.sleep(1.5)  # refusals are written in the background

    events = audit(server, "--user", user)
    kinds = [(e["event"], e["key_id"]) for e in events]
    assert ("created", key_id) in kinds and ("created", read_id) in kinds
    assert ("rotated", key_id) in kinds and ("revoked", new_id) in kinds
    denied_read = [e for e in events if e["event"] == "denied-use" and e["key_id"] == read_id]
    denied_revoked = [e for e in events if e["event"] == "denied-use" and e["key_id"] == key_id]
    expired_uses = [e for e in events if e["event"] == "expired-use"]
    for rows in (denied_read, denied_revoked, expired_uses):
        assert 1 <= len(rows) <= server.workers, events
    assert "read-only key: POST /api/2.0/mlflow/experiments/create" in denied_read[0]["detail"]
    assert denied_revoked[0]["detail"] == "revoked key"
    rotation = next(e for e in events if e["event"] == "rotated")
    assert rotation["actor"] == user  # rotated with the user's own key
    assert next(e for e in events if e["event"] == "created")["actor"] == "admin"
    assert rotation["address"] == "127.0.0.1" and rotation["time"]
    everything = json.dumps(events)
    for secret in (key, read_key, rotated["key"], expired):
        assert secret not in everything  # key ids only, never keys


def test_audit_list_filters_and_formats(server):
    user = f"audit-filters-{time.time_ns()}"
    server.create_key(user)  # the offline CLI audits as the operating-system user
    [event] = audit(server, "--user", user, "--since", "1h")
    assert event["event"] == "created" and event["actor"].startswith("cli:")
    assert event["address"] == "local" and event["username"] == user
    assert audit(server, "--user", user, "--since", "2999-01-01") == []
    assert len(audit(server, "--user", user, "--since", "2000-01-01T00:00:00Z")) == 1
    table = server.cli("audit", "list", "--user", user).stdout
    assert table.splitlines()[0].split()[:3] == ["TIME", "EVENT", "ACTOR"] and user in table
    empty = server.cli("audit", "list", "--user", f"nobody-{time.time_ns()}").stdout
    assert empty.split() == ["TIME", "EVENT", "ACTOR", "KEY_ID", "USERNAME", "ADDRESS", "DETAIL"]
    bad = server.cli("audit", "list", "--since", "last tuesday", check=False)
    assert bad.returncode != 0 and "--since" in bad.stderr
