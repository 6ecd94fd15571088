"""``mlflow server --app-name hokusai --expose-prometheus DIR``: our counters join MLflow's on
``/metrics`` (multiprocess: both workers' counts add up), scraped with an admin's read-only key;
no label carries a key, a digest or a user name."""

from __future__ import annotations

import base64
import re

import pytest

from tests.helpers import api_key_for
from tests.security.raw import send

KEYS = "/api/2.0/mlflow/hokusai/api-keys"
WHOAMI = "/api/2.0/mlflow/hokusai/whoami"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tests.server import Server

    directory = tmp_path_factory.mktemp("metrics")
    srv = Server(
        str(directory),
        workers=2,
        args=["--expose-prometheus", str(directory / "prometheus")],
        env={"HOKUSAI_LOGIN_FAILURE_LIMIT": "2/minute"},
    ).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def scraper(server):
    made = server.post(f"{KEYS}/create", server.admin_key, json={"scope": "read", "name": "prom"})
    assert made.status_code == 200, made.text
    return made.json()["key"]


def _scrape(server, key) -> str:
    reply = server.get("/metrics", key)
    assert reply.status_code == 200, reply.text
    return reply.text


def _value(text: str, name: str, **labels) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    total = 0.0
    found = False
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*?)\}} (\S+)", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            total += float(match.group(2))
            found = True
    assert found, f"no {name}{{{wanted}}} in /metrics"
    return total


def test_outcomes_lookups_and_key_counts(server, scraper):
    before = _scrape(server, scraper)
    outcomes = ("unauthenticated", "forbidden_scope", "forbidden_ip", "rate_limited")
    start = {o: _value(before, "hokusai_auth_requests_total", outcome=o) for o in outcomes}
    key = api_key_for(server, "metrics-alice")
    for _ in range(3):
        assert server.get(WHOAMI, key).status_code == 200
        assert server.get(WHOAMI, "hk_live_" + "x" * 39).status_code == 401
        refused = server.post(f"{KEYS}/create", scraper, json={})
        assert refused.status_code == 403  # a read-only key writing
    pinned = server.post(
        f"{KEYS}/create",
        server.admin_key,
        json={"username": "metrics-bob", "allowed_ips": ["127.0.0.2"]},
    ).json()["key"]
    assert send(server.url, "GET", WHOAMI, [("Authorization", f"Bearer {pinned}")]).status == 403
    wrong = "Basic " + base64.b64encode(b"metrics-carol:wrong").decode()
    statuses = [server.get(WHOAMI, headers={"Authorization": wrong}).status_code for _ in range(6)]
    assert statuses.count(429) >= 2, statuses  # 2/minute per worker, two workers
    limited = server.post(
        f"{KEYS}/create", server.admin_key, json={"username": "metrics-dan", "rate_limit": "1/hour"}
    ).json()["key"]
    over = [server.get(WHOAMI, limited).status_code for _ in range(3)]
    assert over == [200, 429, 429]

    after = _scrape(server, scraper)
    delta = {
        o: _value(after, "hokusai_auth_requests_total", outcome=o) - start[o] for o in outcomes
    }
    assert delta["forbidden_scope"] == 3 and delta["forbidden_ip"] == 1
    assert delta["rate_limited"] == statuses.count(429) + 2  # failed logins and the key's limit
    assert delta["unauthenticated"] == 3 + statuses.count(401)
    assert _value(after, "hokusai_auth_requests_total", outcome="ok") >= 3
    assert _value(after, "hokusai_auth_requests_total", outcome="unavailable") == 0
    assert _value(after, "hokusai_key_lookups_total", result="lookup") >= 1
    assert _value(after, "hokusai_key_lookups_total", result="cache_hit") >= 1
    assert _value(after, "hokusai_api_keys", status="active") >= 1  # the admin key at start
    for status in ("rotating", "dormant", "expired", "revoked"):
        _value(after, "hokusai_api_keys", status=status)
    assert "mlflow_" in after  # MLflow's own metrics are still there
    # Nothing that names a key or a user.
    for secret in (key, key[:16], pinned, scraper, "metrics-alice", "metrics-carol"):
        assert secret not in after


def test_metrics_need_a_key_and_mlflows_admin_rule(server):
    assert server.get("/metrics").status_code == 401
    assert server.get("/metrics", api_key_for(server, "metrics-dave")).status_code == 403
