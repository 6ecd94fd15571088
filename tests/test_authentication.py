"""Authentication against a real server: every bad credential is a 401 JSON, everywhere."""

import base64
import time

import pytest
import requests

from mlflow_hokusai.keys.format import generate_key
from tests.helpers import insert_expired_key, key_id_of

# One route of each kind: Flask REST, Flask ajax-api, artifact proxy, FastAPI-native.
PROTECTED = [
    ("GET", "/api/2.0/mlflow/experiments/search?max_results=1"),
    ("GET", "/ajax-api/2.0/mlflow/experiments/search?max_results=1"),
    ("GET", "/api/2.0/mlflow-artifacts/artifacts"),
    ("GET", "/ajax-api/2.0/mlflow-artifacts/artifacts"),
    ("POST", "/v1/traces"),
    ("POST", "/ajax-api/3.0/jobs/search"),
    ("POST", "/gateway/some-endpoint/mlflow/invocations"),
    ("GET", "/api/mlflow/api/2.0/mlflow/experiments/search?max_results=1"),
]


@pytest.fixture(scope="module")
def bad_keys(server):
    valid = server.create_key("bad-keys-owner")
    revoked = server.create_key("bad-keys-owner")
    server.cli("keys", "revoke", key_id_of(server, revoked))
    time.sleep(1.1)  # the documented staleness bound for caches that saw the key active
    flipped = valid[:-1] + ("A" if valid[-1] != "A" else "B")
    return {
        "missing": None,
        "malformed": "hk_live_tooshort",
        "bad checksum": flipped,
        "unknown": generate_key(),
        "expired": insert_expired_key(server.database_uri, "bad-keys-owner"),
        "revoked": revoked,
        "wrong scheme": "Token " + valid,
    }


def _call(server, method, path, credential):
    headers = {}
    if credential is not None:
        headers["Authorization"] = (
            credential if credential.startswith("Token ") else f"Bearer {credential}"
        )
    return requests.request(method, server.url + path, headers=headers, json={}, timeout=30)


@pytest.mark.parametrize("method, path", PROTECTED)
@pytest.mark.parametrize(
    "case",
    ["missing", "malformed", "bad checksum", "unknown", "expired", "revoked", "wrong scheme"],
)
def test_bad_credentials_are_401_json(server, bad_keys, case, method, path):
    response = _call(server, method, path, bad_keys[case])
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"] == 'Basic realm="mlflow-hokusai"'
    body = response.json()
    assert body["error_code"] == "UNAUTHENTICATED"
    assert body["message"]


def test_messages_say_what_is_wrong(server, bad_keys):
    path = PROTECTED[0][1]
    assert "expired" in _call(server, "GET", path, bad_keys["expired"]).json()["message"]
    assert "revoked" in _call(server, "GET", path, bad_keys["revoked"]).json()["message"]
    assert "checksum" in _call(server, "GET", path, bad_keys["bad checksum"]).json()["message"]
    assert "Bearer" in _call(server, "GET", path, None).json()["message"]


@pytest.mark.parametrize("method, path", PROTECTED)
def test_valid_key_passes_the_gate(server, method, path):
    response = _call(server, method, path, server.admin_key)
    assert response.status_code not in (401, 403), response.text
    assert response.status_code < 500 or "gateway" in path, response.text


def test_all_three_ways_of_sending_a_key(server):
    key = server.create_key("three-ways")
    path = "/api/2.0/mlflow/hokusai/whoami"
    by_bearer = server.get(path, headers={"Authorization": f"Bearer {key}"})
    by_header = server.get(path, headers={"X-API-Key": key})
    by_basic = server.get(path, auth=("whoever", key))
    for response in (by_bearer, by_header, by_basic):
        assert response.status_code == 200, response.text
        assert response.json()["username"] == "three-ways"


def test_mlflow_password_still_works_through_basic(server):
    password = (server.workdir / "hokusai_admin_password").read_text().strip()
    ok = server.get("/api/2.0/mlflow/hokusai/whoami", auth=("admin", password))
    assert ok.status_code == 200 and ok.json() == {
        "username": "admin",
        "is_admin": True,
        "key_id": None,
        "scope": "write",
        "limits": None,
        "federated": False,
    }
    wrong = server.get("/api/2.0/mlflow/hokusai/whoami", auth=("admin", "not-the-password"))
    assert wrong.status_code == 401 and wrong.json()["error_code"] == "UNAUTHENTICATED"


def test_public_routes_need_no_key(server):
    assert server.get("/health").status_code == 200
    assert server.get("/version").text.strip()
    assert server.get("/version").status_code == 200
    assert server.get("/api/3.0/mlflow/server-info").status_code == 200
    assert server.get("/api/mlflow/health").status_code == 200
    # ... and nothing else: the UI itself asks for a login.
    home = server.get("/")
    assert home.status_code == 401 and "Basic" in home.headers["WWW-Authenticate"]


def test_whoami(server):
    key = server.create_key("whoami-user", "--name", "laptop")
    me = server.get("/api/2.0/mlflow/hokusai/whoami", key)
    assert me.status_code == 200
    assert me.json() == {
        "username": "whoami-user",
        "is_admin": False,
        "key_id": key_id_of(server, key),
        "scope": "write",
        "limits": None,
        "federated": False,
    }
    ajax = server.get("/ajax-api/2.0/mlflow/hokusai/whoami", key)
    assert ajax.json() == me.json()
    admin = server.get("/api/mlflow/api/2.0/mlflow/hokusai/whoami", server.admin_key).json()
    assert admin["username"] == "admin" and admin["is_admin"] is True


def test_other_users_experiment_is_403_json(server):
    owner = server.create_key("exp-owner")
    other = server.create_key("exp-other")
    created = server.post(
        "/api/2.0/mlflow/experiments/create", owner, json={"name": f"owned-{time.time_ns()}"}
    )
    assert created.status_code == 200, created.text
    experiment_id = created.json()["experiment_id"]
    # Default permission READ: the other user can read it...
    read = server.get(f"/api/2.0/mlflow/experiments/get?experiment_id={experiment_id}", other)
    assert read.status_code == 200
    # ... but not change it.
    for path, body in [
        ("/api/2.0/mlflow/experiments/update", {"experiment_id": experiment_id, "new_name": "x"}),
        ("/api/2.0/mlflow/experiments/delete", {"experiment_id": experiment_id}),
        ("/ajax-api/2.0/mlflow/runs/create", {"experiment_id": experiment_id}),
    ]:
        denied = server.post(path, other, json=body)
        assert denied.status_code == 403, denied.text
        assert denied.json()["error_code"] == "PERMISSION_DENIED"
    assert (
        server.post(
            "/api/2.0/mlflow/runs/create", owner, json={"experiment_id": experiment_id}
        ).status_code
        == 200
    )


def test_revoked_key_is_refused_by_every_worker_within_one_second(server):
    key = server.create_key("revoke-me")
    path = "/api/2.0/mlflow/hokusai/whoami"
    # Fresh connections spread over both workers and warm their caches.
    for _ in range(20):
        assert server.get(path, key).status_code == 200
    server.cli("keys", "revoke", key_id_of(server, key))
    revoked_at = time.monotonic()
    time.sleep(max(0.0, revoked_at + 1.0 - time.monotonic()))
    codes = [server.get(path, key).status_code for _ in range(40)]
    assert codes == [401] * 40


def test_basic_auth_with_bad_base64_is_401_not_500(server):
    for value in ["Basic %%%", "Basic " + base64.b64encode(b"\xff\xfe").decode(), "Basic"]:
        response = server.get(
            "/api/2.0/mlflow/experiments/search", headers={"Authorization": value}
        )
        assert response.status_code == 401
        assert response.json()["error_code"] == "UNAUTHENTICATED"


def test_a_workspace_header_without_workspaces_is_refused_as_mlflow_refuses_it(server):
    """MLflow's workspace middleware runs only where it acts (a request naming a workspace
    is one): on a server without workspaces it still refuses the header, as plain MLflow
    does, for Flask routes and for FastAPI-native ones alike, with MLflow's words (as a 400:
    MLflow answers 500, though it is the request that is wrong)."""
    key = server.admin_key
    for method, path in (
        ("GET", "/api/2.0/mlflow/experiments/search?max_results=1"),
        ("GET", "/api/2.0/mlflow-artifacts/artifacts/nothing.txt"),
    ):
        response = requests.request(
            method,
            server.url + path,
            headers={"Authorization": f"Bearer {key}", "X-MLflow-Workspace": "team"},
            timeout=30,
        )
        assert response.status_code == 400, (path, response.text)  # MLflow says 500
        assert response.json()["error_code"] == "FEATURE_DISABLED"
        assert "workspaces are not enabled" in response.json()["message"]
        plain = requests.request(
            method, server.url + path, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        assert plain.status_code != 400
