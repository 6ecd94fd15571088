"""The authorization-lookup cache never hides a change made through the worker that made it.

One server with ONE worker and the longest allowed cache (1 s): every request reaches the same
process, and each check follows the change at once, so a stale cache entry would show.
"""

import threading

import mlflow
import pytest
import requests
from packaging.version import Version

from mlflow_hokusai.auth.cache import (
    MISS,
    LookupCache,
    decided_on_fresh_data,
    decided_on_fresh_data_async,
)
from tests.server import Server

API2 = "/api/2.0/mlflow"
API3 = "/api/3.0/mlflow"


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory):
    srv = Server(
        str(tmp_path_factory.mktemp("authz-cache")),
        workers=1,
        env={"HOKUSAI_AUTH_CACHE_TTL_SECONDS": "1"},
    )
    srv.start()
    yield srv
    srv.stop()


def _run_in_new_experiment(server, key, name):
    experiment = server.post(f"{API2}/experiments/create", key, json={"name": name})
    assert experiment.status_code == 200, experiment.text
    experiment_id = experiment.json()["experiment_id"]
    run = server.post(f"{API2}/runs/create", key, json={"experiment_id": experiment_id})
    assert run.status_code == 200, run.text
    return experiment_id, run.json()["run"]["info"]["run_id"]


def _call(server, method, path, body):
    """An admin call with a method ``Server`` has no helper for."""
    return requests.request(
        method,
        server.url + path,
        json=body,
        timeout=30,
        headers={"Authorization": f"Bearer {server.admin_key}"},
    )


def _log_metric(server, key, run_id):
    return server.post(
        f"{API2}/runs/log-metric",
        key,
        json={"run_id": run_id, "key": "m", "value": 1.0, "timestamp": 0},
    )


def test_permission_grant_and_revoke_apply_at_once(one_worker):
    server = one_worker
    owner = server.create_key("cache-owner")
    other = server.create_key("cache-other")
    experiment_id, run_id = _run_in_new_experiment(server, owner, "cache-grant")
    # The owner may write at once (the "creator gets MANAGE" grant is a store write too).
    assert _log_metric(server, owner, run_id).status_code == 200
    assert _log_metric(server, other, run_id).status_code == 403  # READ by default; now cached
    grant = {
        "username": "cache-other",
        "resource_type": "experiment",
        "resource_id": experiment_id,
        "permission": "EDIT",
    }
    response = server.post(f"{API3}/users/permissions/grant", server.admin_key, json=grant)
    assert response.status_code == 200, response.text
    assert _log_metric(server, other, run_id).status_code == 200
    revoke = {k: grant[k] for k in ("username", "resource_type", "resource_id")}
    response = server.post(f"{API3}/users/permissions/revoke", server.admin_key, json=revoke)
    assert response.status_code == 200, response.text
    assert _log_metric(server, other, run_id).status_code == 403


def test_admin_flag_change_applies_at_once(one_worker):
    server = one_worker
    owner = server.create_key("cache-owner2")
    promoted = server.create_key("cache-promoted")
    _, run_id = _run_in_new_experiment(server, owner, "cache-admin")
    assert _log_metric(server, promoted, run_id).status_code == 403
    for is_admin, status in ((True, 200), (False, 403)):
        response = _call(
            server,
            "PATCH",
            f"{API2}/users/update-admin",
            {"username": "cache-promoted", "is_admin": is_admin},
        )
        assert response.status_code == 200, response.text
        whoami = server.get(f"{API2}/hokusai/whoami", promoted).json()
        assert whoami["is_admin"] is is_admin
        assert _log_metric(server, promoted, run_id).status_code == status


def test_deleted_user_is_refused_at_once(one_worker):
    server = one_worker
    key = server.create_key("cache-leaver")
    assert server.get(f"{API2}/hokusai/whoami", key).status_code == 200
    response = _call(server, "DELETE", f"{API2}/users/delete", {"username": "cache-leaver"})
    assert response.status_code == 200, response.text
    assert server.get(f"{API2}/hokusai/whoami", key).status_code == 401


def test_run_model_links_are_still_redacted_for_a_denied_reader(one_worker):
    """The redaction shortcut skips only bodies without link fields; this one has them."""
    if Version(mlflow.__version__) < Version("3.17"):
        pytest.skip("MLflow before 3.17 does not redact logged-model links from runs")
    server = one_worker
    owner = server.create_key("cache-linker")
    reader = server.create_key("cache-denied-reader")
    experiment_id, run_id = _run_in_new_experiment(server, owner, "cache-links")
    model = server.post(
        f"{API2}/logged-models", owner, json={"experiment_id": experiment_id, "name": "linked"}
    )
    assert model.status_code == 200, model.text
    model_id = model.json()["model"]["info"]["model_id"]
    response = server.post(
        f"{API2}/runs/log-inputs",
        owner,
        json={"run_id": run_id, "models": [{"model_id": model_id}]},
    )
    assert response.status_code == 200, response.text
    deny = {
        "username": "cache-denied-reader",
        "resource_type": "logged_model",
        "resource_id": "*",
        "permission": "DENY",
    }
    response = server.post(f"{API3}/users/permissions/grant", server.admin_key, json=deny)
    assert response.status_code == 200, response.text

    def links(key):
        got = server.get(f"{API2}/runs/get?run_id={run_id}", key)
        found = server.post(f"{API2}/runs/search", key, json={"experiment_ids": [experiment_id]})
        assert got.status_code == 200 and found.status_code == 200
        runs = [got.json()["run"], *found.json()["runs"]]
        return [run.get("inputs", {}).get("model_inputs", []) for run in runs]

    assert links(owner)[0] == [{"model_id": model_id}]  # GetRun carries the link
    assert links(reader) == [[], []]


# -- the cache itself ------------------------------------------------------------------------
def test_values_are_cached_until_cleared():
    cache = LookupCache(ttl=60)
    calls = []

    def load(name):
        calls.append(name)
        return name.upper()

    cached = cache.cached("user", load)
    assert cached("a") == "A" and cached("a") == "A"
    assert calls == ["a"]
    cache.clear()
    assert cached("a") == "A"
    assert calls == ["a", "a"]


def test_arguments_key_the_cache_and_sets_are_order_free():
    cache = LookupCache(ttl=60)
    calls = []

    def grants(user_id, workspace, types):
        calls.append((user_id, workspace))
        return sorted(types)

    cached = cache.cached("grants", grants)
    assert cached(1, "default", {"run", "experiment"}) == ["experiment", "run"]
    assert cached(1, "default", {"experiment", "run"}) == ["experiment", "run"]
    assert cached(2, "default", {"run"}) == ["run"]
    assert cached(1, "default", [bytearray(b"x")]) == [bytearray(b"x")]
    assert cached(1, "default", [bytearray(b"x")]) == [bytearray(b"x")]
    assert calls == [(1, "default"), (2, "default"), (1, "default"), (1, "default")]


def test_exceptions_and_unkept_values_are_not_cached():
    cache = LookupCache(ttl=60)
    calls = []

    def failing():
        calls.append(1)
        raise LookupError("no such user")

    for _ in range(2):
        with pytest.raises(LookupError):
            cache.get("k", failing)
        assert cache.get("none", lambda: calls.append(2), keep=lambda v: v is not None) is None
    assert calls == [1, 2, 1, 2]


def test_writes_clear_the_cache_even_when_they_fail():
    cache = LookupCache(ttl=60)
    cache.get("k", lambda: 1)

    def write():
        raise RuntimeError("half done")

    with pytest.raises(RuntimeError):
        cache.invalidating(write)()
    assert cache.peek("k") is MISS
    assert cache.get("k", lambda: 2) == 2


def test_a_lookup_racing_a_clear_is_not_stored():
    cache = LookupCache(ttl=60)
    started, release = threading.Event(), threading.Event()

    def slow_old_value():
        started.set()
        release.wait(10)
        return "old"

    reader = threading.Thread(target=lambda: cache.get("k", slow_old_value))
    reader.start()
    started.wait(10)
    cache.clear()  # a write committed while the read was in flight
    release.set()
    reader.join(10)
    assert cache.get("k", lambda: "new") == "new"


def test_a_refusal_from_a_cached_answer_is_decided_again_on_fresh_data():
    cache = LookupCache(ttl=60)
    grants = {"alice": ["old"]}
    load = cache.cached("grants", lambda user: tuple(grants[user]))
    assert load("alice") == ("old",)  # now cached
    grants["alice"].append("new")  # granted by another worker: this cache does not know

    def allowed():
        return "new" in load("alice")

    assert allowed() is False  # the cached answer alone would refuse
    assert decided_on_fresh_data(allowed, lambda ok: not ok) is True
    assert load("alice") == ("old", "new")  # and the fresh answer is what is cached now


def test_a_refusal_is_decided_again_only_when_what_it_used_has_changed():
    cache = LookupCache(ttl=60)
    calls, loads, stored = [], [], {"v": "a"}

    def load():
        loads.append(True)
        return stored["v"]

    def decide(result):
        def run():
            calls.append(cache.get("k", load))
            return result

        return run

    assert decided_on_fresh_data(decide(True), lambda ok: not ok) is True
    assert len(calls) == 1  # allowed: once (and now cached)
    calls.clear()
    loads.clear()
    assert decided_on_fresh_data(decide(False), lambda ok: not ok) is False
    assert (len(calls), len(loads)) == (1, 1)  # refused from the cache: re-read, unchanged
    calls.clear()
    stored["v"] = "b"  # another worker changed it
    assert decided_on_fresh_data(decide(False), lambda ok: not ok) is False
    assert calls == ["a", "b"]  # changed: decided again, on the fresh answer
    cache.clear()
    calls.clear()
    assert decided_on_fresh_data(decide(False), lambda ok: not ok) is False
    assert len(calls) == 1  # refused on a fresh load already: not again


def test_fresh_lookups_reach_async_decisions():
    import asyncio

    cache = LookupCache(ttl=60)
    value = {"v": 1}
    cache.get("k", lambda: value["v"])
    value["v"] = 2

    async def decide():
        return await asyncio.to_thread(cache.get, "k", lambda: value["v"])

    assert asyncio.run(decided_on_fresh_data_async(decide, lambda got: got != 2)) == 2
