"""The ``mlflow.app.client`` client and the CLI's online mode, against a real server."""

import json
import subprocess
import sys

import mlflow.server
import pytest
from mlflow.exceptions import MlflowException

from tests.server import clean_env

API = "/api/2.0/mlflow/hokusai/api-keys"


def _key_for(server, username, **body):
    made = server.post(f"{API}/create", server.admin_key, json={"username": username, **body})
    assert made.status_code == 200, made.text
    return made.json()["key"]


@pytest.fixture
def as_key(monkeypatch):
    def use(key):
        for name in (
            "MLFLOW_TRACKING_AUTH",
            "MLFLOW_TRACKING_USERNAME",
            "MLFLOW_TRACKING_PASSWORD",
            "HOKUSAI_API_KEY",
        ):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", key)

    return use


@pytest.mark.parametrize("prefix", ["", "/api/mlflow"])
def test_app_client_round_trip(server, as_key, prefix):
    user = f"app-client{prefix.replace('/', '-')}"
    as_key(_key_for(server, user))
    client = mlflow.server.get_app_client("hokusai", tracking_uri=server.url + prefix)
    me = client.whoami()
    assert (me["username"], me["scope"]) == (user, "write")

    created = client.create_api_key(name="dashboard", scope="read", expires_in_days=7)
    assert created.key.startswith(created.prefix) and created.scope == "read"
    assert created.key not in repr(created)
    listed = client.list_api_keys()
    assert created.id in [k.id for k in listed] and all(k.key is None for k in listed)

    rotated = client.rotate_api_key(created.id)
    assert rotated.key and rotated.id != created.id and rotated.name == "dashboard"
    overlapping = client.rotate_api_key(rotated.id, grace_seconds=600)
    during = {k.id: k for k in client.list_api_keys()}[rotated.id]
    assert (during.status, during.replaced_by) == ("rotating", overlapping.id)
    assert during.rotation_ends_at
    assert client.revoke_api_key(rotated.id).status == "revoked"
    statuses = {k.id: k.status for k in client.list_api_keys()}
    assert statuses[created.id] == statuses[rotated.id] == "revoked"

    with pytest.raises(MlflowException, match="There is no API key with id 'nope'"):
        client.revoke_api_key("nope")
    with pytest.raises(MlflowException, match="'scope' must be one of"):
        client.create_api_key(scope="admin")
    with pytest.raises(MlflowException, match="Only admins may list every user's keys"):
        client.list_api_keys(all_users=True)
    limited = client.create_api_key(name="notebook", rate_limit="600/minute")
    assert limited.rate_limit == "600/minute"
    assert {k.id: k.rate_limit for k in client.list_api_keys()}[limited.id] == "600/minute"
    with pytest.raises(MlflowException, match="'rate_limit' must be a number of requests"):
        client.create_api_key(rate_limit="600/day")


def test_app_client_keeps_mlflows_user_methods(server, as_key):
    _key_for(server, "app-client-target")
    as_key(server.admin_key)
    client = mlflow.server.get_app_client("hokusai", tracking_uri=server.url)
    assert client.get_user("app-client-target").username == "app-client-target"
    assert "app-client-target" in {k.username for k in client.list_api_keys(all_users=True)}
    assert {k.username for k in client.list_api_keys("app-client-target")} == {"app-client-target"}


def _cli(server, *args, key=None):
    env = clean_env(**({"HOKUSAI_API_KEY": key} if key else {}))
    return subprocess.run(
        [sys.executable, "-m", "mlflow_hokusai.cli", *args, "--tracking-uri", server.url],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=server.workdir,
    )


def test_cli_online_mode(server):
    key = _key_for(server, "cli-online")
    created = _cli(server, "keys", "create", "--name", "from-cli", "--scope", "read", key=key)
    assert created.returncode == 0, created.stderr
    new_key = created.stdout.strip()
    assert created.stdout == new_key + "\n" and new_key not in created.stderr
    assert server.get("/api/2.0/mlflow/hokusai/whoami", new_key).json()["scope"] == "read"

    listed = _cli(server, "keys", "list", "--format", "json", key=key)
    records = json.loads(listed.stdout)
    assert {r["username"] for r in records} == {"cli-online"}
    new_id = next(r["id"] for r in records if r["name"] == "from-cli")

    rotated = _cli(server, "keys", "rotate", new_id, key=key)
    assert rotated.returncode == 0 and rotated.stdout.strip().startswith("hk_")
    assert new_id in rotated.stderr

    # Online, the caller's rights apply: another user's key is refused with the server's words.
    admin_key_id = server.get("/api/2.0/mlflow/hokusai/whoami", server.admin_key).json()["key_id"]
    refused = _cli(server, "keys", "revoke", admin_key_id, key=key)
    assert refused.returncode != 0 and "belongs to another user" in refused.stderr

    missing = _cli(server, "keys", "list")
    assert missing.returncode != 0 and "HOKUSAI_API_KEY" in missing.stderr


def test_cli_online_takes_a_key_for_its_id_and_never_echoes_it(server):
    key = _key_for(server, "cli-online-by-key")
    spare = _key_for(server, "cli-online-by-key", name="spare")
    spare_id = server.get("/api/2.0/mlflow/hokusai/whoami", spare).json()["key_id"]
    revoked = _cli(server, "keys", "revoke", spare, key=key)
    assert revoked.returncode == 0, revoked.stderr
    assert spare_id in revoked.stderr and spare not in revoked.stderr + revoked.stdout
    assert server.get("/api/2.0/mlflow/hokusai/whoami", spare).status_code == 401

    again = _cli(server, "keys", "revoke", spare, key=key)  # revoked: the server won't say
    assert again.returncode != 0 and spare not in again.stderr + again.stdout
    assert spare[:12] in again.stderr and "keys list" in again.stderr
