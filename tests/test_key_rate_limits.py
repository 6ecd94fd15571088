"""Per-key rate limits (``rate_limit``, CLI ``--rate-limit``, server ``default_rate_limit``):
the shared counters on SQLite, PostgreSQL and Redis across processes, and a real server (two
workers) answering 429 with ``Retry-After`` and ``RateLimit-*`` headers, the stock MLflow
client slowing down and losing nothing, and both behaviours when the store is down. Across
2 replicas x 2 workers: ``tests/test_replicas.py``."""

from __future__ import annotations

import json
import multiprocessing
import time

import pytest
import requests

from mlflow_hokusai.config import ConfigError, load_settings
from mlflow_hokusai.errors import HokusaiError
from mlflow_hokusai.keys.management import parse_key_rate_limit
from tests.rate_load import analyse, hammer

KEYS = "/api/2.0/mlflow/hokusai/api-keys"
WHOAMI = "/api/2.0/mlflow/hokusai/whoami"
AUDIT_EVENTS = "hokusai_audit_events"


# -- parsing and settings ----------------------------------------------------------------------
def test_limits_are_normalised():
    assert parse_key_rate_limit("1000/hour") == "1000/hour"
    assert parse_key_rate_limit(" 60 / Minute ") == "60/minute"
    assert parse_key_rate_limit("none") == "none" and parse_key_rate_limit(None) is None


@pytest.mark.parametrize("value", ["1000/day", "0/hour", "1000001/second", "ten/minute", 5, ""])
def test_bad_limits_are_a_400_naming_the_field_and_the_rule(value):
    with pytest.raises(HokusaiError) as caught:
        parse_key_rate_limit(value)
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"
    assert "'rate_limit' must be a number of requests from 1 to 1,000,000" in caught.value.message


def test_rate_limit_settings():
    settings = load_settings({})
    assert (settings.default_rate_limit, settings.rate_limit_storage) == (None, None)
    assert settings.rate_limit_unavailable == "open"
    settings = load_settings(
        {
            "HOKUSAI_DEFAULT_RATE_LIMIT": "1000/Hour",
            "HOKUSAI_RATE_LIMIT_STORAGE": "redis://127.0.0.1:6379/0",
            "HOKUSAI_RATE_LIMIT_UNAVAILABLE": "closed",
        }
    )
    assert settings.default_rate_limit == "1000/hour"
    assert settings.rate_limit_storage == "redis://127.0.0.1:6379/0"
    assert settings.rate_limit_unavailable == "closed"
    with pytest.raises(ConfigError, match="HOKUSAI_DEFAULT_RATE_LIMIT"):
        load_settings({"HOKUSAI_DEFAULT_RATE_LIMIT": "1000/day"})
    with pytest.raises(ConfigError, match="'open'.*'closed'"):
        load_settings({"HOKUSAI_RATE_LIMIT_UNAVAILABLE": "maybe"})


# -- the shared store, across processes ---------------------------------------------------------
def _take(uri: str, rate: str, attempts: int, queue) -> None:
    from mlflow_hokusai.auth.rate_limits import RateLimits, rate_limits
    from mlflow_hokusai.config import Settings
    from mlflow_hokusai.store.engine import get_engine

    if uri.startswith("redis"):
        limits = rate_limits(Settings(rate_limit_storage=uri), None)
    else:
        from mlflow_hokusai.store.rate_counters import SqlCounterStorage

        limits = RateLimits(SqlCounterStorage(get_engine(uri)))
    queue.put(sum(limits.check("k", rate).allowed for _ in range(attempts)))


@pytest.fixture(params=["sqlite", "postgresql", "redis"])
def store_uri(request, tmp_path):
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        import redis

        redis.Redis.from_url(server.url).flushdb()
        return server.url
    from mlflow_hokusai.store.engine import get_engine, upgrade

    if request.param == "sqlite":
        uri = f"sqlite:///{tmp_path / 'keys.db'}"
    else:
        uri = request.getfixturevalue("postgres").create_database(f"rate_{time.time_ns()}")
    upgrade(get_engine(uri))
    return uri


@pytest.mark.parametrize(("rate", "expected"), [("150/hour", 150), ("40000/hour", 4000)])
def test_four_processes_never_take_more_than_the_limit(store_uri, rate, expected):
    """Four processes race for one key's permits: 150/hour is taken one by one, exactly; with
    40000/hour they take batches of 200 and all 4000 requests fit."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    attempts = 100 if expected == 150 else 1000
    workers = [
        context.Process(target=_take, args=(store_uri, rate, attempts, queue)) for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    taken = sum(queue.get(timeout=120) for _ in workers)
    for worker in workers:
        worker.join(30)
    assert taken == expected


# -- a real server ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tests.server import Server

    env = {"HOKUSAI_DEFAULT_RATE_LIMIT": "1000/minute"}
    srv = Server(str(tmp_path_factory.mktemp("rate-limits")), workers=2, env=env).start()
    yield srv
    srv.stop()


def _create(server, key, **body):
    return server.post(f"{KEYS}/create", key, json=body)


@pytest.fixture(scope="module")
def alice(server):
    return server.create_key("alice")


def test_over_the_limit_429_with_retry_after_and_ratelimit_headers(server, alice):
    created = _create(server, alice, name="ci", rate_limit="5/second").json()
    key, prefix = created["key"], created["api_key"]["prefix"]
    assert created["api_key"]["rate_limit"] == "5/second"
    # Fresh connections: the requests spread over both workers; the limit is theirs together.
    answers = [requests.get(server.url + WHOAMI, headers=_bearer(key)) for _ in range(12)]
    ok = [a for a in answers if a.status_code == 200]
    limited = [a for a in answers if a.status_code == 429]
    assert len(ok) == 5 and len(limited) == 7, [a.status_code for a in answers]
    for answer in ok:
        assert answer.headers["RateLimit-Limit"] == "5"
        assert 0 <= int(answer.headers["RateLimit-Remaining"]) <= 4
        assert 1 <= int(answer.headers["RateLimit-Reset"]) <= 1
    assert ok[-1].headers["RateLimit-Remaining"] == "0"
    refusal = limited[0]
    assert refusal.json() == {
        "error_code": "REQUEST_LIMIT_EXCEEDED",
        "message": f"This API key ({prefix}…) is over its rate limit of 5/second; retry in 1 s.",
    }
    assert refusal.headers["Retry-After"] == "1" and refusal.headers["RateLimit-Remaining"] == "0"
    time.sleep(1.1)  # the window moves on
    again = requests.get(server.url + WHOAMI, headers=_bearer(key))
    assert again.status_code == 200 and again.headers["RateLimit-Limit"] == "5"


def test_the_refusal_is_audited_once_and_nothing_is_done(server, alice):
    key = _create(server, alice, rate_limit="2/minute").json()["key"]
    for _ in range(2):
        assert requests.get(server.url + WHOAMI, headers=_bearer(key)).status_code == 200
    refused = [
        requests.post(
            server.url + "/api/2.0/mlflow/experiments/create",
            headers=_bearer(key),
            json={"name": f"limited-{i}"},
        )
        for i in range(4)
    ]
    assert {r.status_code for r in refused} == {429}
    assert (
        server.get(
            "/api/2.0/mlflow/experiments/get-by-name?experiment_name=limited-0", alice
        ).status_code
        == 404
    )
    audit = json.loads(
        server.cli("audit", "list", "--event", "rate-limited", "--format", "json").stdout
    )
    events = [e for e in audit if "over its rate limit of 2/minute" in e["detail"]]
    assert 1 <= len(events) <= 2  # at most once a minute per worker and address


def test_keys_without_a_limit_get_the_server_default(server, alice):
    record = _create(server, alice, name="plain").json()["api_key"]
    assert record["rate_limit"] == "1000/minute"
    listed = server.get(f"{KEYS}/list", alice).json()["api_keys"]
    assert {k["id"]: k["rate_limit"] for k in listed}[record["id"]] == "1000/minute"


def test_only_admins_may_opt_out_of_the_default(server, alice):
    refused = _create(server, alice, rate_limit="none")
    assert refused.status_code == 403
    assert "Only admins may create a key without a rate limit" in refused.json()["message"]
    assert "default_rate_limit is 1000/minute" in refused.json()["message"]
    made = _create(server, server.admin_key, username="alice", rate_limit="none")
    assert made.status_code == 200 and made.json()["api_key"]["rate_limit"] is None
    answer = requests.get(server.url + WHOAMI, headers=_bearer(made.json()["key"]))
    assert answer.status_code == 200 and "RateLimit-Limit" not in answer.headers


@pytest.mark.parametrize("value", ["10/day", "0/second", "many", 100, ["1/second"]])
def test_bad_limits_get_400_and_write_nothing(server, alice, value):
    before = len(server.get(f"{KEYS}/list", alice).json()["api_keys"])
    answer = _create(server, alice, rate_limit=value)
    assert answer.status_code == 400
    assert answer.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "'rate_limit' must be a number of requests" in answer.json()["message"]
    assert len(server.get(f"{KEYS}/list", alice).json()["api_keys"]) == before


def test_rotation_keeps_the_limit(server, alice):
    old = _create(server, alice, rate_limit="7/hour").json()["api_key"]
    new = server.post(f"{KEYS}/rotate", alice, json={"key_id": old["id"]}).json()["api_key"]
    assert new["rate_limit"] == "7/hour"


def test_the_cli_sets_and_shows_the_limit(server):
    key = server.cli("keys", "create", "--user", "carol", "--rate-limit", "30/second").stdout
    listed = json.loads(server.cli("keys", "list", "--format", "json").stdout)
    mine = [k for k in listed if k["prefix"] == key.strip()[:12]]
    assert [k["rate_limit"] for k in mine] == ["30/second"]
    table = server.cli("keys", "list", "--user", "carol").stdout
    assert "RATE_LIMIT" in table and "30/second" in table
    bad = server.cli("keys", "create", "--user", "carol", "--rate-limit", "3/day", check=False)
    assert bad.returncode != 0 and "must be a number of requests" in bad.stderr
    # the offline CLI applies the server's default too, and only it may opt out
    default = server.cli("keys", "create", "--user", "carol").stdout.strip()
    listed = json.loads(server.cli("keys", "list", "--format", "json").stdout)
    assert [k["rate_limit"] for k in listed if k["prefix"] == default[:12]] == ["1000/minute"]


def test_the_limit_holds_across_workers_in_any_window(server, alice):
    """Eight clients (both workers) hammer a 40/second key for 3.5 s."""
    key = _create(server, server.admin_key, username="alice", rate_limit="40/second").json()["key"]
    figures = analyse(hammer([server.url], key, clients=8, seconds=3.5), 40, 1.0)
    assert figures["statuses"] == [200, 429], figures
    # Below 400 per period each permit is one entry in the shared counter: none over.
    assert figures["surely_in_window"] <= 40, figures
    assert figures["usable"] >= 0.95, figures


def test_a_key_and_its_replacements_share_one_limit(server, alice):
    """A 30/minute key rotates itself three times with grace windows, leaving four live keys:
    together they get 30 requests a minute, not 120 (each rotation is a request too)."""
    key = _create(server, alice, rate_limit="30/minute").json()["key"]
    live = [key]
    for _ in range(3):
        me = requests.get(server.url + WHOAMI, headers=_bearer(live[-1])).json()
        rotated = requests.post(
            server.url + f"{KEYS}/rotate",
            json={"key_id": me["key_id"], "grace_seconds": 600},
            headers=_bearer(live[-1]),
        )
        assert rotated.status_code == 200, rotated.text
        assert rotated.json()["api_key"]["rate_limit"] == "30/minute"
        live.append(rotated.json()["key"])
    statuses = [
        requests.get(server.url + WHOAMI, headers=_bearer(live[i % 4])).status_code
        for i in range(140)
    ]
    assert set(statuses) == {200, 429}
    # 6 requests above (3 whoami, 3 rotations) took from the same minute's allowance
    assert statuses.count(200) + 6 <= 30, statuses.count(200)
    assert statuses.count(200) >= 30 - 6 - 2, statuses.count(200)  # and it was usable


def test_a_stock_client_over_its_limit_slows_down_and_loses_nothing(server, alice, tracking):
    """MLflow's client retries a 429 after Retry-After: 60 single log_metric calls with a
    10/second key take about 5 s, and every value arrives."""
    key = _create(server, alice, rate_limit="10/second").json()["key"]
    with tracking(server, key) as mlflow:
        experiment = mlflow.create_experiment(f"rate-limited-{time.time_ns()}")
        client = mlflow.MlflowClient()
        run = client.create_run(experiment)
        started = time.monotonic()
        for step in range(60):
            client.log_metric(run.info.run_id, "loss", 1.0 / (step + 1), step=step)
        elapsed = time.monotonic() - started
    history = server.get(
        f"/api/2.0/mlflow/metrics/get-history?run_id={run.info.run_id}&metric_key=loss",
        server.admin_key,
    ).json()["metrics"]
    assert sorted(m["step"] for m in history) == list(range(60))
    assert elapsed >= 4.0  # 62 requests at 10/second: it waited for its limit


def _bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


# -- the store is down: fail open or closed ------------------------------------------------------
@pytest.mark.parametrize("mode", ["open", "closed"])
def test_an_unreachable_redis_fails_as_configured(tmp_path, redis_server, mode):
    from tests.redis_server import RedisServer
    from tests.server import Server

    store = RedisServer().start()
    env = {"HOKUSAI_RATE_LIMIT_STORAGE": store.url, "HOKUSAI_RATE_LIMIT_UNAVAILABLE": mode}
    srv = Server(str(tmp_path), workers=2, env=env).start()
    try:
        key = srv.create_key("dave", "--rate-limit", "3/second")
        plain = srv.create_key("erin", "--rate-limit", "unlimited")
        codes = [requests.get(srv.url + WHOAMI, headers=_bearer(key)).status_code for _ in range(5)]
        assert codes == [200, 200, 200, 429, 429]
        store.stop()
        time.sleep(1.1)
        answers = [requests.get(srv.url + WHOAMI, headers=_bearer(key)) for _ in range(6)]
        if mode == "open":
            assert [a.status_code for a in answers] == [200] * 6  # no limit while it is down
            assert "rate-limit store unreachable" in srv.log_text()
            assert "rate_limit_unavailable = open" in srv.log_text()
        else:
            assert [a.status_code for a in answers] == [503] * 6
            assert answers[0].json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
            assert "rate-limit store is unreachable" in answers[0].json()["message"]
            assert answers[0].headers["Retry-After"]
        # keys without a limit never need the store
        assert requests.get(srv.url + WHOAMI, headers=_bearer(plain)).status_code == 200
        store.start()  # back on the same port: the limit applies again
        time.sleep(1.1)
        codes = [requests.get(srv.url + WHOAMI, headers=_bearer(key)).status_code for _ in range(5)]
        assert codes == [200, 200, 200, 429, 429]
    finally:
        srv.stop()
        store.destroy()
