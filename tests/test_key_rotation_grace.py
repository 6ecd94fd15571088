"""Rotation with an overlap window (``grace_seconds``; CLI ``--grace``): both keys work during
the window, the old one is listed as ``rotating`` with its end, refused afterwards with a
message naming its replacement, and revoking it ends the window at once."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from mlflow_hokusai.config import ConfigError, load_settings
from mlflow_hokusai.errors import HokusaiError
from mlflow_hokusai.keys.lifetime import LifetimeRules, lifetime_rules

KEYS = "/api/2.0/mlflow/hokusai/api-keys"
WHOAMI = "/api/2.0/mlflow/hokusai/whoami"


# -- the rule and the settings ---------------------------------------------------------------
def test_grace_default_and_range():
    rules = LifetimeRules(rotation_grace_seconds=60, max_rotation_grace_seconds=3600)
    assert rules.grace(None) == timedelta(seconds=60)
    assert rules.grace(0) is None and rules.grace(3600) == timedelta(hours=1)
    assert LifetimeRules().grace(None) is None  # immediate, as before


@pytest.mark.parametrize("value", [-1, 3601, "24h", True, 1.5])
def test_bad_grace_is_a_400_naming_the_field_and_the_rule(value):
    rules = LifetimeRules(max_rotation_grace_seconds=3600)
    with pytest.raises(HokusaiError) as caught:
        rules.grace(value)
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"
    assert "'grace_seconds'" in caught.value.message


def test_grace_settings():
    rules = lifetime_rules(
        load_settings({"HOKUSAI_ROTATION_GRACE": "24h", "HOKUSAI_MAX_ROTATION_GRACE": "2d"})
    )
    assert (rules.rotation_grace_seconds, rules.max_rotation_grace_seconds) == (86400, 172800)
    assert lifetime_rules(load_settings({})).max_rotation_grace_seconds == 7 * 86400
    with pytest.raises(ConfigError, match="not a duration"):
        load_settings({"HOKUSAI_ROTATION_GRACE": "soon"})
    with pytest.raises(ConfigError, match="must not exceed"):
        load_settings({"HOKUSAI_ROTATION_GRACE": "8d"})


# -- a real server -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tests.server import Server

    env = {"HOKUSAI_MAX_ROTATION_GRACE": "1h"}
    srv = Server(str(tmp_path_factory.mktemp("rotation-grace")), workers=1, env=env).start()
    yield srv
    srv.stop()


def _new_key(server, user: str) -> tuple[str, str]:
    made = server.post(f"{KEYS}/create", server.admin_key, json={"username": user})
    assert made.status_code == 200, made.text
    return made.json()["key"], made.json()["api_key"]["id"]


def _listed(server, user: str) -> dict:
    listed = server.get(f"{KEYS}/list?username={user}", server.admin_key)
    assert listed.status_code == 200, listed.text
    return {k["id"]: k for k in listed.json()["api_keys"]}


def test_both_keys_work_during_the_window_and_the_old_one_stops_after(server):
    old_key, old_id = _new_key(server, "grace-alice")
    rotated = server.post(f"{KEYS}/rotate", old_key, json={"key_id": old_id, "grace_seconds": 3})
    assert rotated.status_code == 200, rotated.text
    new_key = rotated.json()["key"]
    new = rotated.json()["api_key"]
    replaced = rotated.json()["replaced"]
    assert replaced["status"] == "rotating" and replaced["replaced_by"] == new["id"]
    ends = datetime.fromisoformat(replaced["rotation_ends_at"])
    now = datetime.now(timezone.utc)
    assert timedelta(seconds=1) < ends - now <= timedelta(seconds=3)
    for key in (old_key, new_key):
        assert server.get(WHOAMI, key).json()["username"] == "grace-alice"
    assert _listed(server, "grace-alice")[old_id]["status"] == "rotating"
    audit = server.cli("audit", "list", "--user", "grace-alice", "--format", "json").stdout
    assert f"replaced by {new['id']} works until" in audit

    time.sleep(max(0.0, (ends - datetime.now(timezone.utc)).total_seconds()) + 0.2)
    refused = server.get(WHOAMI, old_key)
    assert refused.status_code == 401, refused.text
    assert f"use its replacement ({new['prefix']}…)" in refused.json()["message"]
    assert server.get(WHOAMI, new_key).status_code == 200
    listed = _listed(server, "grace-alice")
    assert listed[old_id]["status"] == "revoked" and listed[old_id]["replaced_by"] == new["id"]
    again = server.post(f"{KEYS}/rotate", server.admin_key, json={"key_id": old_id})
    assert again.status_code == 400 and "already rotated" in again.json()["message"]


def test_revoking_the_old_key_ends_the_window_at_once(server):
    old_key, old_id = _new_key(server, "grace-bob")
    body = {"key_id": old_id, "grace_seconds": 3600}
    rotated = server.post(f"{KEYS}/rotate", server.admin_key, json=body)
    assert rotated.status_code == 200, rotated.text
    assert server.get(WHOAMI, old_key).status_code == 200
    revoked = server.post(f"{KEYS}/revoke", server.admin_key, json={"key_id": old_id})
    assert revoked.status_code == 200 and revoked.json()["api_key"]["status"] == "revoked"
    assert server.get(WHOAMI, old_key).status_code == 401
    assert server.get(WHOAMI, rotated.json()["key"]).status_code == 200


@pytest.mark.parametrize("grace", [3601, -5, "1h", None])
def test_a_bad_grace_writes_nothing(server, grace):
    old_key, old_id = _new_key(server, "grace-carol")
    before = _listed(server, "grace-carol")
    body = {"key_id": old_id, "grace_seconds": grace}
    if grace is None:
        body["grace_seconds"] = {"seconds": 5}
    refused = server.post(f"{KEYS}/rotate", server.admin_key, json=body)
    assert refused.status_code == 400, refused.text
    message = refused.json()["message"]
    assert "'grace_seconds'" in message
    assert _listed(server, "grace-carol") == before
    assert server.get(WHOAMI, old_key).status_code == 200


def test_offline_cli_rotates_with_a_grace(server):
    _, old_id = _new_key(server, "grace-cli")
    result = server.cli("keys", "rotate", old_id, "--grace", "10m")
    new_key = result.stdout.strip()
    assert new_key.startswith("hk_") and "\n" not in new_key
    assert "keeps working until" in result.stderr
    assert server.get(WHOAMI, new_key).status_code == 200
    table = server.cli("keys", "list", "--user", "grace-cli").stdout
    assert "rotating until" in table
    bad = server.cli("keys", "rotate", old_id, "--grace", "soon", check=False)
    assert bad.returncode == 2 and "not a duration" in bad.stderr


def test_online_cli_rotates_with_a_grace(server):
    import subprocess
    import sys

    from tests.server import clean_env

    key, key_id = _new_key(server, "grace-online")
    result = subprocess.run(
        [sys.executable, "-m", "mlflow_hokusai.cli", "keys", "rotate", key_id, "--grace", "5m"]
        + ["--tracking-uri", server.url],
        env=clean_env(HOKUSAI_API_KEY=key),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "keeps working until" in result.stderr
    assert server.get(WHOAMI, key).status_code == 200  # the window is open
    assert server.get(WHOAMI, result.stdout.strip()).status_code == 200
