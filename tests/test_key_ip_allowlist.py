"""Per-key IP allowlists (``allowed_ips``, CLI ``--allow-ip``) and the client address behind
trusted proxies (``HOKUSAI_TRUSTED_PROXIES``), against a real server with real peers: the
loopback range is 127.0.0.0/8, so a client bound to 127.0.0.2 is another peer than 127.0.0.1,
and 127.0.0.3 plays the trusted proxy."""

from __future__ import annotations

import json

import pytest

from mlflow_hokusai.auth.addresses import ClientAddress
from mlflow_hokusai.config import ConfigError, load_settings
from mlflow_hokusai.errors import HokusaiError
from mlflow_hokusai.keys.management import parse_allowed_ips
from tests.security.raw import send

KEYS = "/api/2.0/mlflow/hokusai/api-keys"
WHOAMI = "/api/2.0/mlflow/hokusai/whoami"
PROXY = "127.0.0.3"


# -- parsing and the client address ------------------------------------------------------------
def test_entries_are_normalised():
    assert parse_allowed_ips(["127.0.0.2", "10.0.0.0/8", "2001:db8::1", "10.0.0.0/8"]) == (
        "127.0.0.2/32",
        "10.0.0.0/8",
        "2001:db8::1/128",
    )
    # IPv4-mapped entries mean the IPv4 addresses (peers are compared as IPv4)
    assert parse_allowed_ips(["::ffff:127.0.0.2", "::ffff:10.0.0.0/104"]) == (
        "127.0.0.2/32",
        "10.0.0.0/8",
    )
    assert parse_allowed_ips(None) == () and parse_allowed_ips([]) == ()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["10.0.0.1", "300.1.1.1"], "'allowed_ips' entry '300.1.1.1' is not"),
        (["10.0.0.0/33"], "'allowed_ips' entry '10.0.0.0/33' is not"),
        ([" 10.0.0.1"], "'allowed_ips' entry ' 10.0.0.1' is not"),
        ([7], "'allowed_ips' entry 'int' is not"),
        ("10.0.0.1", "'allowed_ips' must be a list"),
        ([f"10.0.0.{i}" for i in range(21)], "at most 20 entries, not 21"),
        (["10.1.2.3/0"], "'allowed_ips' entry '10.1.2.3/0' has host bits set"),
        (["10.1.2.3/8"], "(10.0.0.0/8 is the range it is in)"),
    ],
)
def test_bad_entries_are_a_400_naming_them(value, message):
    with pytest.raises(HokusaiError) as caught:
        parse_allowed_ips(value)
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"
    assert message in caught.value.message


def test_the_client_address_behind_trusted_proxies():
    none = ClientAddress()
    assert none.of("127.0.0.1", ["203.0.113.9"]) == "127.0.0.1"  # no proxy trusted
    trusted = ClientAddress(["10.0.0.0/8"])
    assert trusted.of("192.0.2.1", ["203.0.113.9"]) == "192.0.2.1"  # peer not a proxy
    assert trusted.of("10.0.0.5", ["203.0.113.9"]) == "203.0.113.9"
    # The client wrote the left part; our proxies appended the right-most hops.
    assert trusted.of("10.0.0.5", ["198.51.100.1, 203.0.113.9, 10.0.0.7"]) == "203.0.113.9"
    assert trusted.of("10.0.0.5", ["198.51.100.1", "203.0.113.9"]) == "203.0.113.9"
    assert trusted.of("10.0.0.5", ["10.0.0.8, 10.0.0.7"]) == "10.0.0.8"
    assert trusted.of("10.0.0.5", []) == "10.0.0.5"
    assert trusted.of("10.0.0.5", ["not-an-address"]) == "not-an-address"


def test_trusted_proxies_setting():
    settings = load_settings({"HOKUSAI_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.7 ::1"})
    assert settings.trusted_proxies == ("10.0.0.0/8", "192.0.2.7/32", "::1/128")
    with pytest.raises(ConfigError, match="'10.0.0.300' is not an IP address"):
        load_settings({"HOKUSAI_TRUSTED_PROXIES": "10.0.0.300"})


# -- a real server -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tests.server import Server

    env = {"HOKUSAI_TRUSTED_PROXIES": f"{PROXY}/32"}
    srv = Server(str(tmp_path_factory.mktemp("ip-allowlist")), workers=2, env=env).start()
    yield srv
    srv.stop()


def _create(server, body: dict):
    return server.post(f"{KEYS}/create", server.admin_key, json=body)


def _whoami(server, key: str, source: str, forwarded: str | None = None):
    headers = [("Authorization", f"Bearer {key}")]
    if forwarded is not None:
        headers.append(("X-Forwarded-For", forwarded))
    return send(server.url, "GET", WHOAMI, headers, source=source)


@pytest.fixture(scope="module")
def pinned(server):
    """A key that works only from 127.0.0.2."""
    made = _create(server, {"username": "ip-alice", "allowed_ips": ["127.0.0.2"]})
    assert made.status_code == 200, made.text
    assert made.json()["api_key"]["allowed_ips"] == ["127.0.0.2/32"]
    return made.json()["key"], made.json()["api_key"]


def test_the_key_works_from_its_address_only(server, pinned):
    key, record = pinned
    assert _whoami(server, key, "127.0.0.2").status == 200
    refused = _whoami(server, key, "127.0.0.1")
    assert refused.status == 403, refused.text
    body = refused.json()
    assert body["error_code"] == "PERMISSION_DENIED"
    assert record["prefix"] in body["message"] and "127.0.0.2" not in body["message"]


def test_nothing_is_done_from_elsewhere_and_the_refusal_is_audited(server, pinned):
    key, record = pinned
    create = json.dumps({"name": "ip-from-elsewhere"}).encode()
    headers = [("Authorization", f"Bearer {key}")]
    refused = send(server.url, "POST", "/api/2.0/mlflow/experiments/create", headers, create)
    assert refused.status == 403, refused.text
    lookup = server.get(
        "/api/2.0/mlflow/experiments/get-by-name?experiment_name=ip-from-elsewhere",
        server.admin_key,
    )
    assert lookup.status_code == 404, lookup.text
    audit = json.loads(server.cli("audit", "list", "--user", "ip-alice", "--format", "json").stdout)
    denied = [e for e in audit if e["event"] == "denied-use" and e["key_id"] == record["id"]]
    assert denied and denied[0]["address"] == "127.0.0.1"
    assert denied[0]["detail"] == "address 127.0.0.1 not allowed"


def test_a_forged_forwarded_for_from_an_untrusted_peer_changes_nothing(server, pinned):
    key, _ = pinned
    assert _whoami(server, key, "127.0.0.1", forwarded="127.0.0.2").status == 403
    assert _whoami(server, key, "127.0.0.2", forwarded="198.51.100.1").status == 200


def test_behind_a_trusted_proxy_the_forwarded_client_counts(server, pinned):
    key, _ = pinned
    assert _whoami(server, key, PROXY, forwarded="127.0.0.2").status == 200
    # The proxy appends what it saw: a client claiming 127.0.0.2 from 127.0.0.1 is 127.0.0.1.
    assert _whoami(server, key, PROXY, forwarded="127.0.0.2, 127.0.0.1").status == 403
    assert _whoami(server, key, PROXY).status == 403  # the proxy itself is not allowed


def test_cidr_ranges_and_rotation_keep_the_list(server):
    made = _create(server, {"username": "ip-bob", "allowed_ips": ["127.0.0.0/31", "::1"]})
    assert made.status_code == 200, made.text
    key, record = made.json()["key"], made.json()["api_key"]
    assert _whoami(server, key, "127.0.0.1").status == 200
    assert _whoami(server, key, "127.0.0.2").status == 403
    rotated = server.post(f"{KEYS}/rotate", server.admin_key, json={"key_id": record["id"]})
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["api_key"]["allowed_ips"] == ["127.0.0.0/31", "::1/128"]
    assert _whoami(server, rotated.json()["key"], "127.0.0.2").status == 403


@pytest.mark.parametrize(
    ("allowed", "message"),
    [
        (["127.0.0.1", "no.such.address"], "'allowed_ips' entry 'no.such.address' is not"),
        ([f"10.0.0.{i}" for i in range(21)], "at most 20 entries, not 21"),
        (["10.1.2.3/0"], "'allowed_ips' entry '10.1.2.3/0' has host bits set"),
        (["10.1.2.3/8"], "(10.0.0.0/8 is the range it is in)"),
        ("127.0.0.1", "must be a list"),
    ],
)
def test_bad_lists_get_400_and_write_nothing(server, allowed, message):
    before = server.get(f"{KEYS}/list?username=ip-carol", server.admin_key).json()["api_keys"]
    refused = _create(server, {"username": "ip-carol", "allowed_ips": allowed})
    assert refused.status_code == 400, refused.text
    assert message in refused.json()["message"]
    after = server.get(f"{KEYS}/list?username=ip-carol", server.admin_key).json()["api_keys"]
    assert after == before


def test_the_cli_sets_and_shows_the_list(server):
    key = server.create_key("ip-cli", "--allow-ip", "127.0.0.2", "--allow-ip", "10.0.0.0/8")
    assert _whoami(server, key, "127.0.0.2").status == 200
    assert _whoami(server, key, "127.0.0.1").status == 403
    listed = json.loads(server.cli("keys", "list", "--user", "ip-cli", "--format", "json").stdout)
    assert listed[0]["allowed_ips"] == ["127.0.0.2/32", "10.0.0.0/8"]
    assert "127.0.0.2/32,10.0.0.0/8" in server.cli("keys", "list", "--user", "ip-cli").stdout
    bad = server.cli("keys", "create", "--user", "ip-cli", "--allow-ip", "10.0.0.999", check=False)
    assert bad.returncode == 2 and "'10.0.0.999' is not" in bad.stderr
