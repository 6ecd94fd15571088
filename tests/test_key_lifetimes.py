"""Key lifetime rules (``max_key_lifetime_days``, ``default_key_lifetime_days``,
``expire_unused_after_days``): the rules themselves, the settings, and a real server that
applies them over REST, in the offline CLI and at authentication."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from mlflow_hokusai.config import ConfigError, load_settings
from mlflow_hokusai.errors import HokusaiError
from mlflow_hokusai.keys.format import generate_key
from mlflow_hokusai.keys.lifetime import LifetimeRules, lifetime_rules
from mlflow_hokusai.keys.management import store_key
from mlflow_hokusai.store.clock import utcnow
from mlflow_hokusai.store.engine import get_engine
from mlflow_hokusai.store.keys import KeyRecord, KeyStore
from mlflow_hokusai.store.models import ApiKey

KEYS = "/api/2.0/mlflow/hokusai/api-keys"
WHOAMI = "/api/2.0/mlflow/hokusai/whoami"
ENV = {
    "HOKUSAI_MAX_KEY_LIFETIME_DAYS": "30",
    "HOKUSAI_DEFAULT_KEY_LIFETIME_DAYS": "7",
    "HOKUSAI_EXPIRE_UNUSED_AFTER_DAYS": "10",
}


def _record(created_days_ago=0, expires_in_days=None, last_used_days_ago=None) -> KeyRecord:
    now = utcnow()
    created = now - timedelta(days=created_days_ago)
    return KeyRecord(
        id="k1",
        username="alice",
        name="",
        scope="write",
        display_prefix="hk_live_abcd",
        created_at=created,
        expires_at=None if expires_in_days is None else created + timedelta(days=expires_in_days),
        last_used_at=None
        if last_used_days_ago is None
        else now - timedelta(days=last_used_days_ago),
        revoked_at=None,
        user_is_admin=False,
    )


# -- the rules ---------------------------------------------------------------------------------
def test_no_rules_change_nothing():
    rules = LifetimeRules()
    assert rules.expiry_days(None) is None and rules.expiry_days(4000) == 4000
    assert rules.rotated_lifetime(_record()) is None
    assert rules.status(_record(created_days_ago=3000)) == "active"


def test_the_default_applies_only_when_no_expiry_is_asked_for():
    rules = LifetimeRules(max_lifetime_days=30, default_lifetime_days=7)
    assert rules.expiry_days(None) == 7
    assert rules.expiry_days(1) == 1 and rules.expiry_days(30) == 30


@pytest.mark.parametrize("asked", [31, None])
def test_above_the_maximum_is_a_400_naming_it(asked):
    rules = LifetimeRules(max_lifetime_days=30)
    with pytest.raises(HokusaiError) as caught:
        rules.expiry_days(asked)
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"
    assert "'expires_in_days' must be at most 30" in caught.value.message
    assert "max_key_lifetime_days" in caught.value.message


def test_a_rotated_key_keeps_its_lifetime_cut_to_the_maximum():
    rules = LifetimeRules(max_lifetime_days=30)
    assert rules.rotated_lifetime(_record(expires_in_days=5)) == timedelta(days=5)
    assert rules.rotated_lifetime(_record(expires_in_days=90)) == timedelta(days=30)
    assert rules.rotated_lifetime(_record()) == timedelta(days=30)


def test_dormant_counts_from_last_use_else_creation():
    rules = LifetimeRules(unused_after_days=10)
    assert rules.status(_record(created_days_ago=11)) == "dormant"
    assert rules.status(_record(created_days_ago=9)) == "active"
    assert rules.status(_record(created_days_ago=100, last_used_days_ago=2)) == "active"
    assert rules.status(_record(created_days_ago=100, last_used_days_ago=10)) == "dormant"
    expired = _record(created_days_ago=100, expires_in_days=1)
    assert rules.status(expired) == "expired"  # expiry is said first


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"HOKUSAI_MAX_KEY_LIFETIME_DAYS": "0"}, "max_key_lifetime_days"),
        ({"HOKUSAI_MAX_KEY_LIFETIME_DAYS": "3651"}, "from 1 to 3650"),
        ({"HOKUSAI_DEFAULT_KEY_LIFETIME_DAYS": "a week"}, "default_key_lifetime_days"),
        ({"HOKUSAI_EXPIRE_UNUSED_AFTER_DAYS": "-3"}, "expire_unused_after_days"),
        (
            {"HOKUSAI_MAX_KEY_LIFETIME_DAYS": "7", "HOKUSAI_DEFAULT_KEY_LIFETIME_DAYS": "30"},
            "must not exceed",
        ),
    ],
)
def test_bad_settings_are_refused_at_start(env, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(env)


def test_settings_make_the_rules():
    rules = lifetime_rules(load_settings(ENV))
    assert rules == LifetimeRules(30, 7, 10)
    assert lifetime_rules(load_settings({"HOKUSAI_MAX_KEY_LIFETIME_DAYS": ""})) == LifetimeRules()


# -- a real server -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tests.server import Server

    srv = Server(str(tmp_path_factory.mktemp("lifetimes")), workers=1, env=ENV).start()
    yield srv
    srv.stop()


def _expires_in_days(record: dict) -> float:
    expires = datetime.fromisoformat(record["expires_at"])
    created = datetime.fromisoformat(record["created_at"])
    return (expires - created) / timedelta(days=1)


def _key_count(server) -> int:
    listed = server.get(f"{KEYS}/list?all=true", server.admin_key)
    assert listed.status_code == 200, listed.text
    return len(listed.json()["api_keys"])


def test_rest_applies_the_default_and_the_maximum_to_admins_too(server):
    made = server.post(f"{KEYS}/create", server.admin_key, json={"username": "life-alice"})
    assert made.status_code == 200, made.text
    assert _expires_in_days(made.json()["api_key"]) == pytest.approx(7, abs=0.01)
    before = _key_count(server)
    for body in ({"username": "life-alice", "expires_in_days": 31}, {"expires_in_days": 3650}):
        refused = server.post(f"{KEYS}/create", server.admin_key, json=body)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error_code"] == "INVALID_PARAMETER_VALUE"
        assert "'expires_in_days' must be at most 30" in refused.json()["message"]
    assert _key_count(server) == before  # nothing written
    allowed = server.post(f"{KEYS}/create", made.json()["key"], json={"expires_in_days": 3})
    assert allowed.status_code == 200, allowed.text
    assert _expires_in_days(allowed.json()["api_key"]) == pytest.approx(3, abs=0.01)


def test_the_offline_cli_applies_the_maximum(server):
    result = server.cli(
        "keys", "create", "--user", "life-cli", "--expires-in-days", "31", check=False
    )
    assert result.returncode != 0
    assert "must be at most 30" in result.stderr and not result.stdout.strip()
    key = server.create_key("life-cli")
    assert server.get(WHOAMI, key).status_code == 200


def test_a_key_made_before_the_maximum_rotates_to_one_within_it(server):
    engine = get_engine(server.database_uri)
    key = generate_key()
    server.post(f"{KEYS}/create", server.admin_key, json={"username": "life-old"})
    old = store_key(KeyStore(engine), key, "life-old", name="forever")
    rotated = server.post(f"{KEYS}/rotate", server.admin_key, json={"key_id": old.id})
    assert rotated.status_code == 200, rotated.text
    assert _expires_in_days(rotated.json()["api_key"]) == pytest.approx(30, abs=0.01)


def test_an_unused_key_is_dormant_refused_listed_and_audited(server):
    made = server.post(f"{KEYS}/create", server.admin_key, json={"username": "life-idle"})
    key, key_id = made.json()["key"], made.json()["api_key"]["id"]
    engine = get_engine(server.database_uri)
    with engine.begin() as conn:  # as if made 11 days ago and never used
        conn.execute(
            sa.update(ApiKey)
            .where(ApiKey.id == key_id)
            .values(created_at=utcnow() - timedelta(days=11), last_used_at=None)
        )
    time.sleep(1.2)  # past the worker's one-second cache
    refused = server.get(WHOAMI, key)
    assert refused.status_code == 401, refused.text
    message = refused.json()["message"]
    assert "dormant" in message and "10 days" in message and "expire_unused_after_days" in message
    listed = server.get(f"{KEYS}/list?username=life-idle", server.admin_key).json()["api_keys"]
    assert [k["status"] for k in listed if k["id"] == key_id] == ["dormant"]
    audit = server.cli("audit", "list", "--format", "json").stdout
    assert '"dormant key"' in audit and key_id in audit
    # A key used recently is not dormant, whatever its age.
    with engine.begin() as conn:
        conn.execute(sa.update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=utcnow()))
    time.sleep(1.2)
    assert server.get(WHOAMI, key).status_code == 200


def test_the_documented_config_example_loads(tmp_path):
    """The ``[hokusai]`` example in docs/key-management.md, as a user would copy it."""
    import re
    from pathlib import Path

    doc = (Path(__file__).parent.parent / "docs" / "key-management.md").read_text()
    section = doc[doc.index("## Lifetime rules") :]
    example = re.search(r"```ini\n(.*?)```", section, re.S).group(1)
    config = tmp_path / "hokusai.ini"
    config.write_text(example)
    rules = lifetime_rules(load_settings({"HOKUSAI_CONFIG": str(config)}))
    assert rules == LifetimeRules(90, 30, 60)
