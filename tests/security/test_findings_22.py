"""Regression tests for the adversarial review of issue 22 (items 4 and 5): each reproduces the
attack against a real server. Attenuation has its own walk (``test_attenuation.py``); stale
refusals, ``tests/test_fresh_refusals.py``; federated keys and tokens, ``tests/test_federation.py``.
"""

from __future__ import annotations

import time
import uuid

import pytest
import requests

from tests.helpers import api_key_for

KEYS = "/api/2.0/mlflow/hokusai/api-keys"
POLICIES = "/api/2.0/mlflow/hokusai/federation/policies"


def _keys_of(server, username: str) -> list[str]:
    listed = server.get(f"{KEYS}/list", server.admin_key, params={"username": username})
    return sorted(k["id"] for k in listed.json()["api_keys"])


# -- 4. cross-origin writes ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://localhost:9999"},
        {"Origin": "http://127.0.0.1:1"},
        {"Origin": "https://localhost"},
        {"Origin": "http://[::1]:8080"},
        {"Origin": "null"},
        {"Referer": "http://localhost:9999/attack.html"},
        {"Referer": "https://evil.example/page"},
    ],
    ids=lambda h: f"{next(iter(h))}={next(iter(h.values()))}",
)
def test_another_origin_cannot_change_keys_through_a_browser(server, headers):
    user = f"xorigin-{uuid.uuid4().hex[:8]}"
    key = api_key_for(server, user)
    before = _keys_of(server, user)
    for path, body in (
        (f"{KEYS}/create", {"name": "from-attacker"}),
        (f"{KEYS}/rotate", {"key_id": before[0]}),
        (f"{KEYS}/revoke", {"key_id": before[0]}),
    ):
        answer = server.post(path, key, json=body, headers=dict(headers))
        assert answer.status_code == 403, (path, answer.text)
        assert answer.json()["error_code"] == "PERMISSION_DENIED"
        message = answer.json()["message"]  # ours, or MLflow's own check (e.g. "null")
        assert "may not change keys" in message or "Cross-origin" in message, message
    made = server.post(
        f"{POLICIES}/create",
        server.admin_key,
        json={"issuer": "https://issuer.example", "subject": "x", "username": user},
        headers=dict(headers),
    )
    assert made.status_code == 403, made.text
    assert _keys_of(server, user) == before  # nothing written


def test_the_servers_own_pages_and_api_clients_still_change_keys(server):
    user = f"xorigin-ok-{uuid.uuid4().hex[:8]}"
    key = api_key_for(server, user)
    for headers in (
        {},  # an API client: neither header
        {"Origin": server.url},
        {"Referer": server.url + "/hokusai/keys"},
    ):
        made = server.post(f"{KEYS}/create", key, json={}, headers=dict(headers))
        assert made.status_code == 200, (headers, made.text)


def test_listed_origins_may(tmp_path_factory):
    from tests.server import Server

    with Server(
        str(tmp_path_factory.mktemp("listed-origins")),
        workers=1,
        env={"MLFLOW_SERVER_CORS_ALLOWED_ORIGINS": "https://ml.example.com"},
    ) as server:
        key = api_key_for(server, "listed")
        ok = server.post(
            f"{KEYS}/create", key, json={}, headers={"Origin": "https://ml.example.com"}
        )
        assert ok.status_code == 200, ok.text
        other = server.post(
            f"{KEYS}/create", key, json={}, headers={"Origin": "http://localhost:3000"}
        )
        assert other.status_code == 403, other.text


# -- 4. keys in logged URLs, percent-encoded ------------------------------------------------------
def test_a_percent_encoded_key_in_the_url_is_redacted_from_the_access_log(server):
    key = api_key_for(server, f"url-enc-{uuid.uuid4().hex[:6]}")
    body = key[len("hk_live_") :]
    encoded_c = "".join(f"%{ord(c):02X}" if i % 3 == 0 else c for i, c in enumerate(body))
    for query in (
        "api_key=" + key.replace("_", "%5F"),
        "token=hk_live_" + encoded_c,
        "k=" + key.replace("_", "%255F"),  # encoded twice
    ):
        answer = requests.get(f"{server.url}/api/2.0/mlflow/experiments/search?{query}", timeout=30)
        assert answer.status_code == 401
    time.sleep(0.5)
    log = server.log_text()
    assert body[:12] not in log and body[-12:] not in log
    assert log.count("hk_live_[REDACTED]") >= 3


# -- 5. allowlists and names --------------------------------------------------------------------
def test_an_ipv4_mapped_entry_admits_the_ipv4_peer(server):
    from tests.security.raw import send

    user = f"mapped-{uuid.uuid4().hex[:6]}"
    api_key_for(server, user)
    made = server.post(
        f"{KEYS}/create",
        server.admin_key,
        json={"username": user, "allowed_ips": ["::ffff:127.0.0.2"]},
    )
    assert made.status_code == 200, made.text
    assert made.json()["api_key"]["allowed_ips"] == ["127.0.0.2/32"]
    headers = [("Authorization", f"Bearer {made.json()['key']}")]
    whoami = "/api/2.0/mlflow/hokusai/whoami"
    assert send(server.url, "GET", whoami, headers, source="127.0.0.2").status == 200
    assert send(server.url, "GET", whoami, headers, source="127.0.0.1").status == 403
    refused = server.post(
        f"{KEYS}/create", server.admin_key, json={"username": user, "allowed_ips": ["10.1.2.3/0"]}
    )
    assert refused.status_code == 400 and "host bits set" in refused.json()["message"]


@pytest.mark.parametrize("char", ["\u3164", "\u115f", "\u034f", "\u00ad", "\ufe0f"])
def test_names_with_invisible_characters_are_refused(server, char):
    user = f"invisible-{uuid.uuid4().hex[:6]}"
    for body in ({"username": user, "name": f"ci{char}"}, {"username": f"{user}{char}"}):
        refused = server.post(f"{KEYS}/create", server.admin_key, json=body)
        assert refused.status_code == 400, (body, refused.text)
        assert refused.json()["error_code"] == "INVALID_PARAMETER_VALUE"


# -- found while fixing: a request's limits must not reach the next one on the connection ------
def test_a_limited_keys_refusal_never_reaches_the_next_request_on_the_connection(server):
    """Under uvicorn a kept-alive connection's later requests could inherit an earlier
    request's context: after a resource-limited key was refused a create, every request on
    the same connection (the stock client reuses one) was refused as that create, whatever
    key it carried."""
    owner = api_key_for(server, f"conn-{uuid.uuid4().hex[:6]}")
    model = f"conn-model-{uuid.uuid4().hex[:6]}"
    made = server.post("/api/2.0/mlflow/registered-models/create", owner, json={"name": model})
    assert made.status_code == 200, made.text
    limited = server.post(f"{KEYS}/create", owner, json={"experiments": ["0"]}).json()["key"]
    session = requests.Session()
    for i in range(10):
        refused = session.post(
            f"{server.url}/api/2.0/mlflow/experiments/create",
            json={"name": f"conn-{uuid.uuid4().hex[:8]}"},
            headers={"Authorization": f"Bearer {limited}"},
            timeout=30,
        )
        assert refused.status_code == 403, refused.text
        mine = session.get(
            f"{server.url}/api/2.0/mlflow/registered-models/get",
            params={"name": model},
            headers={"Authorization": f"Bearer {owner}"},
            timeout=30,
        )
        assert mine.status_code == 200, (i, mine.text)
