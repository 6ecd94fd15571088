"""Regression tests for what an adversarial review of main found (the "Hardening" issue), each
reproducing the attack against a real server: forged operator output, deep JSON, database
file modes, keys in logged URLs, keys outliving the key that made them, and the Basic user
name MLflow's handlers read."""

from __future__ import annotations

import base64
import json
import os
import stat
import time

import mlflow
import pytest
import requests
from packaging.version import Version

from tests.helpers import api_key_for
from tests.security.raw import send

KEYS = "/api/2.0/mlflow/hokusai/api-keys"


def _basic(user: str, secret: str) -> dict:
    token = base64.b64encode(f"{user}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def _admin_password(server) -> str:
    return (server.workdir / "hokusai_admin_password").read_text().strip()


def _one_worker_server(tmp_path_factory, name: str, env: dict):
    from tests.server import Server

    return Server(str(tmp_path_factory.mktemp(name)), workers=1, env=env).start()


# -- 7. operator output cannot be forged ---------------------------------------------------
@pytest.mark.parametrize("name", ["evil\u202etxt.exe", "csi\x9b31m", "esc\x1b[2J", "nl\nrow"])
def test_key_names_with_control_or_bidi_characters_are_refused(server, name):
    response = server.post(f"{KEYS}/create", server.admin_key, json={"name": name})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error_code"] == "INVALID_PARAMETER_VALUE" and "'name'" in body["message"]


def test_a_refused_path_cannot_forge_audit_rows(server):
    reader = api_key_for(server, "forger")
    reader = server.post(f"{KEYS}/create", reader, json={"scope": "read"}).json()["key"]
    forged = "%0a2026-01-01T00:00:00+00:00  revoked  admin  \x1b[31mFAKE"
    target = f"/api/2.0/mlflow/runs/create{forged.replace(' ', '%20').replace(chr(27), '%1b')}"
    reply = send(server.url, "POST", target, [("Authorization", f"Bearer {reader}")], b"{}")
    assert reply.status == 403, reply.text
    deadline = time.monotonic() + 20
    while True:  # refusals are written off the request's path
        rows = json.loads(
            server.cli(
                "audit",
                "list",
                "--user",
                "forger",
                "--format",
                "json",
                "--database-uri",
                server.database_uri,
            ).stdout
        )
        denied = [r for r in rows if r["event"] == "denied-use"]
        if denied or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert denied and "\n2026-01-01" in denied[0]["detail"] and "\x1b[31m" in denied[0]["detail"]
    table = server.cli(
        "audit", "list", "--user", "forger", "--database-uri", server.database_uri
    ).stdout
    assert "\x1b" not in table
    lines = table.rstrip("\n").split("\n")
    assert len(lines) == 1 + len(rows), table  # a header and one line per event
    assert "\\x0a2026-01-01" in table and "\\x1b[31mFAKE" in table


# -- 8. malformed JSON is a 400, never a 500 -----------------------------------------------
@pytest.mark.parametrize("endpoint", ["create", "revoke", "rotate"])
def test_deeply_nested_json_is_a_400(server, endpoint):
    for body in ("[" * 2000, '{"a":' * 2000):
        response = server.post(f"{KEYS}/{endpoint}", server.admin_key, data=body)
        assert response.status_code == 400, response.text[:300]
        assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE"


# -- 9. our database file is private -------------------------------------------------------
def test_the_key_database_is_created_owner_only(server):
    path = server.database_uri.removeprefix("sqlite:///")
    for name in (path, path + "-wal"):
        if os.path.exists(name):
            mode = stat.S_IMODE(os.stat(name).st_mode)
            assert mode & 0o077 == 0, f"{name} is {oct(mode)}"


# -- 10. a key in the query string never reaches the log -----------------------------------
def test_a_key_sent_in_the_url_is_redacted_from_the_access_log(server):
    key = api_key_for(server, "url-leaker")
    for path in (
        f"/api/2.0/mlflow/experiments/search?api_key={key}",
        f"/api/mlflow/api/2.0/mlflow/hokusai/whoami?token={key}",
    ):
        assert requests.get(server.url + path, timeout=30).status_code == 401
    time.sleep(0.5)
    log = server.log_text()
    assert key not in log and key[12:] not in log
    assert "api_key=hk_live_[REDACTED]" in log


# -- 11. a key made with a key does not outlive it ----------------------------------------
def test_a_key_cannot_mint_a_longer_lived_key(server):
    api_key_for(server, "short-lived")
    made = server.post(
        f"{KEYS}/create", server.admin_key, json={"username": "short-lived", "expires_in_days": 3}
    )
    short = made.json()["key"]
    for body in ({"expires_in_days": 4}, {"expires_in_days": 30}):
        refused = server.post(f"{KEYS}/create", short, json=body)
        assert refused.status_code == 403, refused.text
        assert "(expiry)" in refused.json()["message"]
    assert server.post(f"{KEYS}/create", short, json={"expires_in_days": 2}).status_code == 200
    # Asking for no expiry in particular gives the short key's own expiry.
    narrowed = server.post(f"{KEYS}/create", short, json={})
    assert narrowed.status_code == 200, narrowed.text
    assert narrowed.json()["api_key"]["expires_at"] == made.json()["api_key"]["expires_at"]
    # An admin's password login is not bound by a key's lifetime.
    by_password = requests.post(
        server.url + f"{KEYS}/create",
        json={"name": "forever"},
        headers=_basic("admin", _admin_password(server)),
        timeout=30,
    )
    assert by_password.status_code == 200, by_password.text
    assert by_password.json()["api_key"]["expires_at"] is None


# -- 1. token-id uniqueness includes prompts -----------------------------------------------
PROMPT = {"key": "mlflow.prompt.is_prompt", "value": "true"}
MODELS = "/api/2.0/mlflow/registered-models"


def _create_model(server, key, name, tags):
    return server.post(f"{MODELS}/create", key, json={"name": name, "tags": tags})


def test_a_token_id_on_a_prompt_is_taken(server):
    alice, bob = api_key_for(server, "prompt-alice"), api_key_for(server, "prompt-bob")
    token = f"prompt-token-{time.time_ns()}"
    held = _create_model(
        server,
        alice,
        f"alice-prompt-{token}",
        [PROMPT, {"key": "hokusai_token_id", "value": token}],
    )
    assert held.status_code == 200, held.text
    clash = _create_model(
        server, bob, f"bob-model-{token}", [{"key": "hokusai_token_id", "value": token.upper()}]
    )
    assert clash.status_code == 409, clash.text
    assert clash.json()["error_code"] == "RESOURCE_ALREADY_EXISTS"
    # ... and the other way round: a prompt cannot take a model's token id.
    other = f"model-token-{time.time_ns()}"
    assert (
        _create_model(
            server, alice, f"alice-model-{other}", [{"key": "hokusai_token_id", "value": other}]
        ).status_code
        == 200
    )
    prompt = _create_model(
        server, bob, f"bob-prompt-{other}", [PROMPT, {"key": "hokusai_token_id", "value": other}]
    )
    assert prompt.status_code == 409, prompt.text
    # A token id on a prompt follows the same rules.
    bad = _create_model(
        server,
        bob,
        f"bob-prompt-bad-{other}",
        [PROMPT, {"key": "hokusai_token_id", "value": "-bad-"}],
    )
    assert bad.status_code == 400, bad.text


def test_flagging_a_holder_as_a_prompt_keeps_its_token(server):
    alice, bob = api_key_for(server, "flag-alice"), api_key_for(server, "flag-bob")
    token = f"flagged-{time.time_ns()}"
    name = f"alice-flagged-{token}"
    assert (
        _create_model(
            server, alice, name, [{"key": "hokusai_token_id", "value": token}]
        ).status_code
        == 200
    )
    flagged = server.post(f"{MODELS}/set-tag", alice, json={"name": name, **PROMPT})
    assert flagged.status_code == 200, flagged.text
    clash = _create_model(
        server, bob, f"bob-{token}", [{"key": "hokusai_token_id", "value": token}]
    )
    assert clash.status_code == 409, clash.text


# -- 3. a deleted user's keys do not come back ---------------------------------------------
def test_a_deleted_users_keys_are_revoked_and_stay_dead(server):
    carol = api_key_for(server, "carol-deleted")
    admin = {"Authorization": f"Bearer {server.admin_key}"}
    assert server.get("/api/2.0/mlflow/hokusai/whoami", carol).status_code == 200
    deleted = requests.delete(
        server.url + "/api/2.0/mlflow/users/delete",
        headers=admin,
        json={"username": "carol-deleted"},
        timeout=30,
    )
    assert deleted.status_code == 200, deleted.text
    time.sleep(1.1)  # the other worker may have the key cached for up to a second
    assert server.get("/api/2.0/mlflow/hokusai/whoami", carol).status_code == 401
    listed = server.get(f"{KEYS}/list?username=carol-deleted", server.admin_key).json()
    assert listed["api_keys"] and {k["status"] for k in listed["api_keys"]} == {"revoked"}
    events = json.loads(
        server.cli(
            "audit",
            "list",
            "--user",
            "carol-deleted",
            "--event",
            "revoked",
            "--format",
            "json",
            "--database-uri",
            server.database_uri,
        ).stdout
    )
    assert any("owner deleted" in e["detail"] for e in events), events
    created = server.post(
        "/api/2.0/mlflow/users/create",
        server.admin_key,
        json={"username": "carol-deleted", "password": "a-new-password-1"},
    )
    assert created.status_code == 200, created.text
    time.sleep(1.1)  # past every worker's cache
    for _ in range(4):  # both workers
        assert server.get("/api/2.0/mlflow/hokusai/whoami", carol).status_code == 401


def test_keys_are_bound_to_the_user_not_the_name(server, tmp_path):
    """Even a key that escaped revocation (the user row removed behind the server's back) is
    not inherited by a new user of the same name: keys name their owner by MLflow's user id,
    and creating a user revokes any key left under that name (SQLite may reuse the id)."""
    import sqlalchemy as sa

    from mlflow_hokusai.store.engine import get_engine

    dave = api_key_for(server, "dave-renamed")
    engine = get_engine(server.database_uri)
    with engine.begin() as conn:  # what deleting the row directly in the database does
        conn.execute(sa.text("DELETE FROM users WHERE username = 'dave-renamed'"))
    created = server.post(
        "/api/2.0/mlflow/users/create",
        server.admin_key,
        json={"username": "dave-renamed", "password": "another-password-1"},
    )
    assert created.status_code == 200, created.text
    time.sleep(1.1)
    for _ in range(4):
        reply = server.get("/api/2.0/mlflow/hokusai/whoami", dave)
        assert reply.status_code == 401, reply.text


# -- 4. a 409 does not reveal a model the caller cannot read -------------------------------
@pytest.fixture(scope="module")
def private_server(tmp_path_factory):
    config = tmp_path_factory.mktemp("no-permissions-config") / "hokusai.ini"
    config.write_text("[mlflow]\ndefault_permission = NO_PERMISSIONS\n")
    srv = _one_worker_server(tmp_path_factory, "no-permissions", {"HOKUSAI_CONFIG": str(config)})
    yield srv
    srv.stop()


def test_the_holder_is_named_only_to_callers_who_may_read_it(private_server):
    server = private_server
    alice, bob = api_key_for(server, "secret-alice"), api_key_for(server, "secret-bob")
    token = f"secret-{time.time_ns()}"
    hidden = f"alice-secret-model-{token}"
    assert (
        _create_model(
            server, alice, hidden, [{"key": "hokusai_token_id", "value": token}]
        ).status_code
        == 200
    )
    clash = _create_model(
        server, bob, f"bob-{token}", [{"key": "hokusai_token_id", "value": token}]
    )
    assert clash.status_code == 409, clash.text
    assert hidden not in clash.text and "another registered model" in clash.text
    by_admin = _create_model(
        server, server.admin_key, f"admin-{token}", [{"key": "hokusai_token_id", "value": token}]
    )
    assert by_admin.status_code == 409 and hidden in by_admin.text
    grant = {
        "username": "secret-bob",
        "resource_type": "registered_model",
        "resource_id": hidden,
        "permission": "READ",
    }
    granted = server.post("/api/3.0/mlflow/users/permissions/grant", server.admin_key, json=grant)
    assert granted.status_code == 200, granted.text
    again = _create_model(
        server, bob, f"bob2-{token}", [{"key": "hokusai_token_id", "value": token}]
    )
    assert again.status_code == 409 and hidden in again.text, again.text


def test_metric_history_is_checked_at_both_api_roots(private_server):
    """MLflow 3.15 checks GetMetricHistoryBulkInterval on /ajax-api/ only and leaves its
    /api/ twin open to every user; both roots check read on the run's experiment here."""
    server = private_server
    alice, bob = api_key_for(server, "metrics-alice"), api_key_for(server, "metrics-bob")
    made = server.post(
        "/api/2.0/mlflow/experiments/create", alice, json={"name": f"private-{time.time_ns()}"}
    )
    assert made.status_code == 200, made.text
    run = server.post(
        "/api/2.0/mlflow/runs/create", alice, json={"experiment_id": made.json()["experiment_id"]}
    ).json()["run"]["info"]["run_id"]
    logged = server.post(
        "/api/2.0/mlflow/runs/log-metric",
        alice,
        json={"run_id": run, "key": "loss", "value": 0.5, "timestamp": 1, "step": 0},
    )
    assert logged.status_code == 200, logged.text
    query = {"run_ids": run, "metric_key": "loss"}
    for root in ("/api", "/ajax-api"):
        path = f"{root}/2.0/mlflow/metrics/get-history-bulk-interval"
        assert server.get(path, alice, params=query).status_code == 200
        refused = server.get(path, bob, params=query)
        assert refused.status_code == 403, (root, refused.text)
        assert "0.5" not in refused.text


# -- 5. failed password logins: one time for every user name, and limited ------------------
@pytest.fixture(scope="module")
def login_server(tmp_path_factory):
    srv = _one_worker_server(
        tmp_path_factory, "logins", {"HOKUSAI_LOGIN_FAILURE_LIMIT": "5/minute"}
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def timing_server(tmp_path_factory):
    env = {"HOKUSAI_LOGIN_FAILURE_LIMIT": "100000/minute"}
    srv = _one_worker_server(tmp_path_factory, "login-timing", env)
    yield srv
    srv.stop()


def test_a_failed_login_takes_the_same_time_whether_or_not_the_user_exists(timing_server):
    """Interleaved wrong-password logins for the admin and for unknown names, each with a
    fresh password (never cached); compared as distributions (Mann-Whitney U), as
    tests/security/test_timing.py does for keys."""
    import random
    import secrets
    import statistics

    from scipy.stats import mannwhitneyu

    session = requests.Session()
    url = timing_server.url + "/api/2.0/mlflow/hokusai/whoami"
    samples = {"admin": [], "nobody": []}
    order = ["admin", "nobody"] * 50
    random.Random(11).shuffle(order)
    for index, kind in enumerate(["admin", "nobody"] * 3 + order):
        user = "admin" if kind == "admin" else f"nosuch-{index}"
        headers = _basic(user, secrets.token_urlsafe(12))
        started = time.perf_counter()
        reply = session.get(url, headers=headers, timeout=30)
        elapsed = time.perf_counter() - started
        assert reply.status_code == 401, reply.text
        assert reply.json()["message"] == "Invalid username or password."
        if index >= 6:  # the first rounds warm up
            samples[kind].append(elapsed)
    u, p = mannwhitneyu(samples["admin"], samples["nobody"], alternative="two-sided")
    effect = u / (len(samples["admin"]) * len(samples["nobody"]))
    print(
        f"\nfailed logins: median admin {statistics.median(samples['admin']) * 1000:.1f} ms, "
        f"unknown user {statistics.median(samples['nobody']) * 1000:.1f} ms; "
        f"effect size {effect:.3f} (0.5 = indistinguishable), p={p:.3f}"
    )
    assert 0.25 <= effect <= 0.75, "a failed login for an unknown user is measurably faster"


def test_failed_logins_are_limited_per_address_and_per_user(login_server):
    server = login_server
    key = api_key_for(server, "login-victim")
    whoami = "/api/2.0/mlflow/hokusai/whoami"

    def login(user, secret, source):
        token = base64.b64encode(f"{user}:{secret}".encode()).decode()
        return send(server.url, "GET", whoami, [("Authorization", f"Basic {token}")], source=source)

    statuses = [login("login-victim", f"guess-{i}", "127.0.0.2").status for i in range(5)]
    assert statuses == [401] * 5
    limited = login("login-victim", "guess-5", "127.0.0.2")
    assert limited.status == 429, limited.text
    assert limited.json()["error_code"] == "REQUEST_LIMIT_EXCEEDED"
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    # Per address: another name from the same address is limited too ...
    assert login("someone-else", "guess", "127.0.0.2").status == 429
    # ... per user name: the same name from another address as well ...
    assert login("login-victim", "guess", "127.0.0.3").status == 429
    # ... while another name from another address is not, and keys are never limited.
    assert login("someone-else", "guess", "127.0.0.3").status == 401
    by_key = send(
        server.url, "GET", whoami, [("Authorization", f"Bearer {key}")], source="127.0.0.2"
    )
    assert by_key.status == 200, by_key.text
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        events = json.loads(
            server.cli(
                "audit",
                "list",
                "--event",
                "login-limited",
                "--format",
                "json",
                "--database-uri",
                server.database_uri,
            ).stdout
        )
        if events:
            break
        time.sleep(0.2)
    assert events and events[0]["address"] == "127.0.0.2", events
    assert events[0]["username"] == "login-victim" and events[0]["key_id"] is None


# -- 8. MLflow's own 500s on malformed input leak nothing ----------------------------------
MALFORMED = [
    ("GET", "/graphql", b""),
    ("POST", "/api/2.0/mlflow/runs/search", b"[]"),
    ("POST", "/api/2.0/mlflow/runs/search", b'{"max_results": 1e400}'),
    ("POST", "/api/2.0/mlflow/registered-models/set-tag", b'{"name": ["x"], "key": "k"}'),
    ("POST", "/api/2.0/mlflow/experiments/create", b'{"name": {"a": 1}}'),
    (
        "POST",
        "/api/2.0/mlflow/model-versions/set-tag",
        b'{"name": ["x"], "version": "1", "key": "k", "value": "v"}',
    ),
    ("POST", "/api/2.0/mlflow/runs/set-tag", b'{"run_id": ["x"], "key": "k", "value": "v"}'),
]


@pytest.mark.parametrize("method, path, body", MALFORMED)
def test_malformed_input_gets_json_and_no_python_text(server, method, path, body):
    for prefix in ("", "/api/mlflow"):
        reply = send(
            server.url,
            method,
            prefix + path,
            [("Authorization", f"Bearer {server.admin_key}")],
            body,
        )
        assert reply.status < 600 and reply.headers["content-type"].startswith(
            "application/json"
        ), (reply.status, reply.text[:300])
        text = reply.text
        for leak in (
            "Traceback",
            "TypeError",
            "ValueError",
            "KeyError",
            "object has no",
            "unhashable",
            ".py",
        ):
            assert leak not in text, (path, reply.status, text[:300])
        if reply.status == 500:
            assert reply.json()["error_code"] == "INTERNAL_ERROR"
        print(f"\n{method} {prefix}{path} {body[:30]!r}: {reply.status} {text[:120]}")


# -- 2. concurrent writes of the benchmark pair never store an invalid pair ----------------
def _race_benchmark_pair(server, trials: int = 50):
    """Each trial: a version with mse = 0.5, then set-tag accuracy and set-tag 7 at once.
    Either order alone is refused (7 is no accuracy; 0.5 ... is fine, 7 for mse is fine): only
    one of the two may pass. Returns the invalid pairs stored and the answers seen."""
    import threading

    from mlflow_hokusai.tags.rules import TagRuleError, validate_tags

    key = api_key_for(server, "pair-racer")
    model = f"pair-race-{time.time_ns()}"
    assert server.post(f"{MODELS}/create", key, json={"name": model}).status_code == 200
    invalid, answers = [], []
    for _ in range(trials):
        created = server.post(
            "/api/2.0/mlflow/model-versions/create",
            key,
            json={
                "name": model,
                "source": "s3://bucket/model",
                "tags": [
                    {"key": "benchmark_metric", "value": "mse"},
                    {"key": "benchmark_value", "value": "0.5"},
                ],
            },
        )
        assert created.status_code == 200, created.text
        version = created.json()["model_version"]["version"]
        barrier = threading.Barrier(2)
        results = []

        def write(tag, value, version=version, barrier=barrier, results=results):
            barrier.wait()
            reply = server.post(
                "/api/2.0/mlflow/model-versions/set-tag",
                key,
                json={"name": model, "version": version, "key": tag, "value": value},
            )
            results.append(reply.status_code)

        threads = [
            threading.Thread(target=write, args=pair)
            for pair in (("benchmark_metric", "accuracy"), ("benchmark_value", "7"))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        answers.append(tuple(sorted(results)))
        reply = server.get(
            f"/api/2.0/mlflow/model-versions/get?name={model}&version={version}", key
        )
        assert reply.status_code == 200, reply.text
        got = reply.json()["model_version"]
        tags = {t["key"]: t["value"] for t in got.get("tags", [])}
        try:
            validate_tags({k: tags[k] for k in ("benchmark_metric", "benchmark_value")})
        except TagRuleError:
            invalid.append(tags)
    return invalid, answers


def test_the_benchmark_pair_race_stores_nothing_invalid_on_sqlite(server):
    invalid, answers = _race_benchmark_pair(server)
    print(f"\nbenchmark pair race (SQLite): answers {sorted(set(answers))}")
    assert invalid == []
    assert set(answers) <= {(200, 400)}, answers  # exactly one of the two always passes


@pytest.mark.postgres
@pytest.mark.xfail(
    Version(mlflow.__version__) < Version("3.17"),
    reason="MLflow 3.15 on PostgreSQL (psycopg 3) compares model_versions.version, an integer "
    "column, with a string parameter: every model-version get/set-tag by version fails there "
    "with 'operator does not exist: integer = character varying' (upstream; 3.17 works)",
    strict=True,
)
def test_the_benchmark_pair_race_stores_nothing_invalid_on_postgresql(postgres, tmp_path):
    from tests.server import Server

    uri = postgres.create_database("pair_race")
    with Server(
        str(tmp_path), workers=2, env={"HOKUSAI_DATABASE_URI": uri}, backend_store_uri=uri
    ) as server:
        invalid, answers = _race_benchmark_pair(server)
    print(f"\nbenchmark pair race (PostgreSQL): answers {sorted(set(answers))}")
    assert invalid == []
    assert set(answers) <= {(200, 400)}, answers
