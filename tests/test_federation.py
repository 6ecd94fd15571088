"""Keyless CI: federation policies (REST, CLI, app client) and the token exchange, against a real
server (two workers) and a real OIDC issuer on loopback (tests/oidc_issuer.py: RSA and EC keys,
discovery document and JWKS over HTTP, GitHub-like tokens). The bad-token corpus: every token
gets 401 and no key. The stock MLflow client with the ``hokusai`` plugin runs the seed's
workflow with no key anywhere in its environment."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timezone
from urllib.parse import urlencode

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization

from tests.oidc_issuer import AUDIENCE, OidcIssuer

POLICIES = "/api/2.0/mlflow/hokusai/federation/policies"
EXCHANGE = "/api/2.0/mlflow/hokusai/token-exchange"
KEYS = "/api/2.0/mlflow/hokusai/api-keys"
WHOAMI = "/api/2.0/mlflow/hokusai/whoami"
GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
MAIN = "repo:octo-org/octo-repo:ref:refs/heads/main"


@pytest.fixture(scope="module")
def issuer():
    oidc = OidcIssuer()
    yield oidc
    oidc.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory, issuer):
    from tests.server import Server

    env = {"HOKUSAI_TOKEN_EXCHANGE_LIMIT": "20/minute", "HOKUSAI_OIDC_MAX_TOKEN_AGE": "1h"}
    srv = Server(str(tmp_path_factory.mktemp("federation")), workers=2, env=env).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def policy(server, issuer):
    answer = server.post(
        f"{POLICIES}/create",
        server.admin_key,
        json={
            "issuer": issuer.url,
            "audience": AUDIENCE,
            "subject": "repo:octo-org/*:ref:refs/heads/main",
            "claims": {"repository_owner": "octo-org", "environment": "prod"},
            "username": "ci-bot",
            "scope": "write",
            "lifetime_seconds": 600,
        },
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["policy"]


_sources = iter(range(10, 250))  # 127.0.N.1: one address per exchange


def post_from(server, source: str, body: bytes, content_type: str):
    """POST to the exchange endpoint from the loopback address ``source``: (status, headers
    with lower-case names, JSON body)."""
    host, port = server.url.split("//", 1)[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30, source_address=(source, 0))
    try:
        conn.request("POST", EXCHANGE, body, {"Content-Type": content_type})
        response = conn.getresponse()
        data = response.read()
        headers = {k.lower(): v for k, v in response.getheaders()}
        return response.status, headers, json.loads(data or b"{}")
    finally:
        conn.close()


def exchange(server, token, source=None, **extra):
    """One exchange (a form, as RFC 8693 has it), from its own loopback address unless named:
    the endpoint is limited per address. (status, JSON body, headers)."""
    body = urlencode(
        {"grant_type": GRANT, "subject_token": token, "subject_token_type": JWT_TYPE, **extra}
    ).encode()
    source = source or f"127.0.{next(_sources)}.1"
    status, headers, answer = post_from(server, source, body, "application/x-www-form-urlencoded")
    return status, answer, headers


def _audit(server, event: str) -> list[dict]:
    return json.loads(server.cli("audit", "list", "--event", event, "--format", "json").stdout)


def _keys_of(server, user="ci-bot"):
    listed = server.get(f"{KEYS}/list?username={user}", server.admin_key).json()["api_keys"]
    return [k for k in listed if k["status"] == "active"]


# -- the happy path ------------------------------------------------------------------------------
@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_a_matching_token_gets_a_short_lived_federated_key(server, issuer, policy, algorithm):
    status, body, headers = exchange(server, issuer.token(algorithm))
    assert status == 200, body
    assert body["token_type"] == "Bearer" and body["expires_in"] == 600
    assert body["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert headers["cache-control"] == "no-store"
    key = body["access_token"]
    assert key.startswith("hk_live_")
    me = server.get(WHOAMI, key).json()
    assert (me["username"], me["scope"], me["federated"]) == ("ci-bot", "write", True)
    assert server.get(WHOAMI, server.admin_key).json()["federated"] is False
    record = {k["id"]: k for k in _keys_of(server)}[me["key_id"]]
    assert record["federated_by"] == policy["id"]
    expires = datetime.fromisoformat(record["expires_at"])
    assert abs((expires - datetime.now(timezone.utc)).total_seconds() - 600) < 30
    events = json.loads(
        server.cli("audit", "list", "--event", "exchanged", "--format", "json").stdout
    )
    assert any(e["key_id"] == me["key_id"] and MAIN in e["detail"] for e in events)


def test_json_bodies_work_too(server, issuer, policy):
    body = {"grant_type": GRANT, "subject_token": issuer.token(), "subject_token_type": JWT_TYPE}
    status, _, answer = post_from(
        server, "127.0.1.1", json.dumps(body).encode(), "application/json"
    )
    assert status == 200, answer


def test_a_key_rotation_at_the_issuer_needs_no_restart(server, issuer, policy):
    """Before the corpus: its made-up kids use up each worker's refetch for a minute."""
    old_token = issuer.token()
    issuer.rotate()  # new kids; the old key is no longer published
    for _ in range(4):  # both workers pick the new keys up
        assert exchange(server, issuer.token())[0] == 200
        assert exchange(server, issuer.token("ES256"))[0] == 200
    status, body, _ = exchange(server, old_token)
    assert status == 401 and "does not publish" in body["message"]


# -- the bad-token corpus: 401, no key -----------------------------------------------------------
def _hs256_with_the_public_key(issuer) -> str:
    """The classic confusion attack: HMAC-sign with the RSA public key (PEM) as the secret."""
    pem = issuer.rsa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": issuer.rsa_kid}).encode())
    payload = b64(json.dumps(issuer.claims()).encode())
    signature = hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(signature)}"


def _tampered(issuer) -> str:
    header, _, signature = issuer.token().split(".")
    claims = issuer.claims(sub="repo:octo-org/octo-repo:ref:refs/heads/main", environment="prod")
    claims["repository_owner"] = "octo-org"
    claims["scope_boost"] = "admin"  # any change to the signed payload
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{payload}.{signature}"


def _none(issuer) -> str:
    return jwt.encode(issuer.claims(), None, algorithm="none")


def _crossed(algorithm: str):
    """A token whose header names ``algorithm`` with the kid of the issuer's key of the other
    type, and a garbage signature (PyJWT raised TypeError on this: a 500 before the fix)."""

    def make(issuer) -> str:
        kid = issuer.rsa_kid if algorithm == "ES256" else issuer.ec_kid

        def part(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        header = part(json.dumps({"alg": algorithm, "kid": kid, "typ": "JWT"}).encode())
        payload = part(json.dumps(issuer.claims()).encode())
        return f"{header}.{payload}.{part(b'garbage' * 10)}"

    return make


def _from_another_issuer(issuer, **claims) -> str:
    other = OidcIssuer()
    try:
        return other.token(**claims)
    finally:
        other.stop()


CORPUS = {
    "wrong issuer": (lambda i: _from_another_issuer(i), "no federation policy trusts"),
    "our issuer named, another's key": (
        lambda i: _from_another_issuer(i, iss=i.url),
        "does not publish",
    ),
    "wrong audience": (lambda i: i.token(aud="https://other.example"), "wrong audience"),
    "expired": (
        lambda i: i.token(iat=int(time.time()) - 900, exp=int(time.time()) - 120),
        "has expired",
    ),
    "not yet valid": (lambda i: i.token(nbf=int(time.time()) + 600), "not valid yet"),
    "too old": (
        lambda i: i.token(iat=int(time.time()) - 7200, exp=int(time.time()) + 300),
        "too old",
    ),
    "alg none": (_none, "algorithm 'none' is not accepted"),
    "HS256 with the public key": (_hs256_with_the_public_key, "algorithm 'HS256'"),
    "unknown kid": (lambda i: i.token(kid="made-up"), "does not publish"),
    "ES256 header, RSA key": (_crossed("ES256"), "says ES256 but the issuer's key"),
    "RS256 header, EC key": (_crossed("RS256"), "says RS256 but the issuer's key"),
    "tampered payload": (_tampered, "signature does not verify"),
    "subject outside the policy": (
        lambda i: i.token(sub="repo:evil-org/octo-repo:ref:refs/heads/main"),
        "no federation policy matches subject",
    ),
    "another branch": (
        lambda i: i.token(sub="repo:octo-org/octo-repo:ref:refs/heads/feature"),
        "no federation policy matches subject",
    ),
    "claim condition unmet": (
        lambda i: i.token(environment="dev"),
        "claim condition(s) 'environment' are not met",
    ),
    "no subject": (lambda i: i.token(sub=None), "has no 'sub' claim"),
    "not a JWT": (lambda i: "hk_live_not-a-jwt", "not a well-formed JWT"),
    "empty": (lambda i: "", "'subject_token' is required"),
}


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_the_bad_token_corpus_gets_401_and_no_key(server, issuer, policy, case):
    make, reason = CORPUS[case]
    before = len(_keys_of(server))
    token = make(issuer)
    status, body, _ = exchange(server, token)
    assert status == 401, body
    assert body["error_code"] == "UNAUTHENTICATED"
    assert reason in body["message"], body["message"]
    if token:
        assert token not in json.dumps(body)  # never echoed
    assert len(_keys_of(server)) == before


def test_refusals_are_audited_without_the_token(server, issuer, policy):
    token = issuer.token(aud="https://audited.example")
    assert exchange(server, token, source="127.0.2.1")[0] == 401
    events = json.loads(
        server.cli("audit", "list", "--event", "exchange-refused", "--format", "json").stdout
    )
    audited = [e for e in events if e["address"] == "127.0.2.1"]
    assert audited and "wrong audience" in audited[0]["detail"]
    assert token not in json.dumps(events)


def test_a_policy_deleted_a_moment_ago_no_longer_matches(server, issuer, policy):
    made = server.post(
        f"{POLICIES}/create",
        server.admin_key,
        json={
            "issuer": issuer.url,
            "audience": AUDIENCE,
            "subject": "repo:octo-org/release:ref:refs/tags/*",
            "username": "release-bot",
        },
    ).json()["policy"]
    token = issuer.token(sub="repo:octo-org/release:ref:refs/tags/v1")
    assert exchange(server, token)[0] == 200
    deleted = server.post(f"{POLICIES}/delete", server.admin_key, json={"policy_id": made["id"]})
    assert deleted.status_code == 200
    status, body, _ = exchange(server, issuer.token(sub="repo:octo-org/release:ref:refs/tags/v2"))
    assert status == 401 and "no federation policy matches subject" in body["message"]


def test_made_up_kids_refetch_the_jwks_at_most_once_a_minute(server, issuer, policy):
    before = issuer.requests.count("/jwks")
    for i in range(10):
        assert exchange(server, issuer.token(kid=f"flood-{i}"))[0] == 401
    assert issuer.requests.count("/jwks") - before <= 2  # once per worker at most


def test_exchanges_are_limited_per_address(server, issuer, policy):
    statuses = [exchange(server, "x", source="127.0.3.1")[0] for _ in range(22)]
    assert statuses[:20] == [401] * 20 and statuses[20:] == [429, 429]
    status, body, headers = exchange(server, "x", source="127.0.3.1")
    assert status == 429 and body["error_code"] == "REQUEST_LIMIT_EXCEEDED"
    assert int(headers["retry-after"]) >= 1
    assert exchange(server, "x", source="127.0.3.2")[0] == 401  # another address is not


def test_bad_requests_are_400(server, issuer, policy):
    status, body, _ = exchange(server, issuer.token(), grant_type="password")
    assert status == 400 and "'grant_type' must be" in body["message"]
    status, body, _ = exchange(server, issuer.token(), subject_token_type="urn:x")
    assert status == 400 and "'subject_token_type'" in body["message"]


# -- policies: admins only, validated, audited ---------------------------------------------------
def test_only_admins_manage_policies(server, issuer):
    user = server.create_key("not-an-admin")
    for method, path, body in (
        ("post", f"{POLICIES}/create", {"issuer": issuer.url}),
        ("get", f"{POLICIES}/list", None),
        ("post", f"{POLICIES}/delete", {"policy_id": "x"}),
    ):
        answer = getattr(server, method)(path, user, **({"json": body} if body else {}))
        assert answer.status_code == 403, answer.text
        assert "Only admins may" in answer.json()["message"]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("issuer", "http://issuer.example", "'issuer' must be the issuer's https URL"),
        ("issuer", "https://issuer.example/?x=1", "'issuer' must be the issuer's https URL"),
        ("lifetime_seconds", 7200, "between 60 and 3600"),
        ("lifetime_seconds", "15m", "whole number of seconds"),
        ("claims", {"sub": "x"}, "may not set 'sub'"),
        ("claims", ["environment=prod"], "'claims' must be an object"),
        ("scope", "admin", "'scope' must be one of"),
        ("rate_limit", "5/day", "'rate_limit' must be a number of requests"),
        ("subject", "", "'subject' is required"),
    ],
)
def test_bad_policies_get_400_naming_the_field(server, issuer, field, value, message):
    body = {
        "issuer": issuer.url,
        "audience": AUDIENCE,
        "subject": MAIN,
        "username": "ci-bot",
        field: value,
    }
    before = server.get(f"{POLICIES}/list", server.admin_key).json()["policies"]
    answer = server.post(f"{POLICIES}/create", server.admin_key, json=body)
    assert answer.status_code == 400 and message in answer.json()["message"], answer.text
    assert server.get(f"{POLICIES}/list", server.admin_key).json()["policies"] == before


def test_the_cli_manages_policies_offline_and_online(server, issuer):
    policy_id = server.cli(
        "federation",
        "create",
        "--issuer",
        issuer.url,
        "--audience",
        AUDIENCE,
        "--subject",
        "system:serviceaccount:ml:trainer",
        "--user",
        "k8s-trainer",
        "--scope",
        "read",
        "--lifetime",
        "30m",
        "--claim",
        "kubernetes.io/namespace=ml",
        "--database-uri",
        server.database_uri,
    ).stdout.strip()
    listed = json.loads(
        server.cli(
            "federation", "list", "--format", "json", "--database-uri", server.database_uri
        ).stdout
    )
    mine = {p["id"]: p for p in listed}[policy_id]
    assert (mine["scope"], mine["lifetime_seconds"]) == ("read", 1800)
    assert mine["claims"] == {"kubernetes.io/namespace": "ml"}
    online = {**server.env(), "HOKUSAI_API_KEY": server.admin_key}
    cmd = [sys.executable, "-m", "mlflow_hokusai.cli", "federation"]
    shown = subprocess.run(
        [*cmd, "show", policy_id, "--tracking-uri", server.url],
        env=online,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(shown.stdout)["subject"] == "system:serviceaccount:ml:trainer"
    table = subprocess.run(
        [*cmd, "list", "--tracking-uri", server.url],
        env=online,
        capture_output=True,
        text=True,
        check=True,
    )
    assert policy_id in table.stdout and "k8s-trainer" in table.stdout
    subprocess.run(
        [*cmd, "delete", policy_id, "--tracking-uri", server.url],
        env=online,
        capture_output=True,
        text=True,
        check=True,
    )
    listed = server.get(f"{POLICIES}/list", server.admin_key).json()["policies"]
    assert policy_id not in {p["id"] for p in listed}
    events = json.loads(server.cli("audit", "list", "--format", "json").stdout)
    kinds = {e["event"] for e in events if policy_id in e["detail"]}
    assert kinds == {"policy-created", "policy-deleted"}


def test_the_app_client_manages_policies(server, issuer, monkeypatch):
    import mlflow.server

    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", server.admin_key)
    client = mlflow.server.get_app_client("hokusai", tracking_uri=server.url)
    made = client.create_federation_policy(
        issuer=issuer.url, audience=AUDIENCE, subject=MAIN, username="ci-bot", lifetime_seconds=120
    )
    assert client.get_federation_policy(made["id"])["lifetime_seconds"] == 120
    assert made["id"] in {p["id"] for p in client.list_federation_policies()}
    assert client.delete_federation_policy(made["id"])["id"] == made["id"]


# -- the stock client, keyless -------------------------------------------------------------------
WORKFLOW = textwrap.dedent(
    """
    import os, sys, time
    import mlflow, numpy as np
    from sklearn.linear_model import LogisticRegression
    assert not any(v.startswith("hk_") for v in os.environ.values())  # no key anywhere
    suffix = sys.argv[1]
    mlflow.set_experiment(f"keyless-{suffix}")
    X = np.random.RandomState(0).rand(40, 3)
    y = (X[:, 0] > 0.5).astype(int)
    with mlflow.start_run() as run:
        mlflow.log_param("C", 1.0)
        model = LogisticRegression().fit(X, y)
        mlflow.log_metric("accuracy", model.score(X, y))
        mlflow.sklearn.log_model(model, name="model")
        for step in range(int(sys.argv[2])):  # a job longer than one key's lifetime
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
            time.sleep(1)
    version = mlflow.register_model(f"runs:/{run.info.run_id}/model", f"keyless-{suffix}")
    print("RESULT", run.info.run_id, version.version)
    """
)


def _keyless_env(server, token_file):
    from tests.server import clean_env

    return clean_env(
        MLFLOW_TRACKING_URI=server.url,
        MLFLOW_TRACKING_AUTH="hokusai",
        HOKUSAI_OIDC_TOKEN_FILE=str(token_file),
    )


def test_the_stock_client_runs_the_workflow_keyless_and_outlives_its_keys(server, issuer, tmp_path):
    made = server.post(
        f"{POLICIES}/create",
        server.admin_key,
        json={
            "issuer": issuer.url,
            "audience": AUDIENCE,
            "subject": "repo:trainer-org/trainer:ref:refs/heads/main",
            "username": "trainer-bot",
            "lifetime_seconds": 60,
        },
    ).json()["policy"]
    sub = "repo:trainer-org/trainer:ref:refs/heads/main"
    status, body, _ = exchange(server, issuer.token(sub=sub))
    assert status == 200
    first_key = body["access_token"]
    token_file = tmp_path / "token"
    token_file.write_text(issuer.token(sub=sub))
    done = subprocess.run(
        [sys.executable, "-c", WORKFLOW, str(time.time_ns()), "36"],
        env=_keyless_env(server, token_file),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    _, run_id, version = result[-1].split()
    history = server.get(
        f"/api/2.0/mlflow/metrics/get-history?run_id={run_id}&metric_key=loss", server.admin_key
    ).json()["metrics"]
    assert sorted(m["step"] for m in history) == list(range(36))
    assert version == "1"
    events = json.loads(
        server.cli("audit", "list", "--event", "exchanged", "--format", "json").stdout
    )
    by_policy = [e for e in events if e["actor"] == f"federation:{made['id']}"]
    assert len(by_policy) >= 3  # ours, then the plugin's first and its renewal
    # The first key dies with its lifetime: it expires 60 s after it was issued (an expired
    # key's 401 is tests/test_authentication.py's), and the workflow outlived it.
    first_id = server.get(WHOAMI, first_key).json()["key_id"]
    listed = server.get(
        "/api/2.0/mlflow/hokusai/api-keys/list",
        server.admin_key,
        params={"username": "trainer-bot"},
    ).json()["api_keys"]
    first = next(k for k in listed if k["id"] == first_id)
    lifetime = datetime.fromisoformat(first["expires_at"]) - datetime.fromisoformat(
        first["created_at"]
    )
    assert abs(lifetime.total_seconds() - 60) < 1


def test_the_plugin_gets_its_token_from_github_actions(server, issuer, policy):
    from tests.server import clean_env

    env = clean_env(
        MLFLOW_TRACKING_URI=server.url + "/api/mlflow",
        MLFLOW_TRACKING_AUTH="hokusai",
        ACTIONS_ID_TOKEN_REQUEST_URL=issuer.url + "/github-token?api-version=2.0",
        ACTIONS_ID_TOKEN_REQUEST_TOKEN=issuer.GITHUB_SECRET,
        HOKUSAI_OIDC_AUDIENCE=AUDIENCE,
    )
    script = (
        "import mlflow; mlflow.set_experiment('keyless-github'); "
        "print('RESULT', mlflow.get_experiment_by_name('keyless-github').experiment_id)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert any(line.startswith("RESULT ") for line in done.stdout.splitlines())
    assert any(path.startswith("/github-token?") for path in issuer.requests)
    events = _audit(server, "exchanged")
    assert any(e["actor"] == f"federation:{policy['id']}" for e in events)


def test_the_plugin_says_what_is_wrong_when_the_exchange_fails(server, issuer, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(issuer.token(aud="https://nobody.example"))
    done = subprocess.run(
        [sys.executable, "-c", "import mlflow; mlflow.search_experiments()"],
        env=_keyless_env(server, token_file),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "Exchanging the workload's OIDC token for a key failed" in done.stderr
    assert "wrong audience" in done.stderr


# -- federated keys manage no keys, and never outlive their policy -------------------------------
def test_a_federated_key_creates_rotates_and_changes_no_keys(server, issuer, policy):
    status, body, _ = exchange(server, issuer.token())
    assert status == 200, body
    key = body["access_token"]
    me = server.get(WHOAMI, key).json()
    sibling = server.post(f"{KEYS}/create", server.admin_key, json={"username": "ci-bot"})
    sibling_id = sibling.json()["api_key"]["id"]
    before = _keys_of(server)
    for path, request in (
        ("create", {}),
        ("rotate", {"key_id": me["key_id"]}),
        ("rotate", {"key_id": sibling_id, "grace_seconds": 604800}),
        ("update", {"key_id": sibling_id, "unlimited": True}),
        ("update", {"key_id": me["key_id"], "experiments": ["0"]}),
        ("revoke", {"key_id": sibling_id}),
    ):
        refused = server.post(f"{KEYS}/{path}", key, json=request)
        assert refused.status_code == 403, (path, refused.text)
        assert "issued by a token exchange" in refused.json()["message"]
    made = server.post(
        f"{POLICIES}/create", key, json={"issuer": issuer.url, "subject": "*", "username": "x"}
    )
    assert made.status_code == 403, made.text  # ci-bot is no admin; and a policy mints keys
    after = _keys_of(server)
    strip = [{k: v for k, v in r.items() if k != "last_used_at"} for r in before]
    assert [{k: v for k, v in r.items() if k != "last_used_at"} for r in after] == strip
    # An admin may rotate it: the replacement is still the policy's.
    rotated = server.post(f"{KEYS}/rotate", server.admin_key, json={"key_id": me["key_id"]})
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["api_key"]["federated_by"] == policy["id"]


NIGHTLY = "repo:octo-org/nightly:ref:refs/heads/nightly"


def test_deleting_a_policy_revokes_every_key_it_issued(server, issuer):
    made = server.post(
        f"{POLICIES}/create",
        server.admin_key,
        json={
            "issuer": issuer.url,
            "audience": AUDIENCE,
            "subject": NIGHTLY,  # no other policy of this module matches it
            "username": "nightly-bot",
            "lifetime_seconds": 600,
        },
    ).json()["policy"]
    keys = []
    for _ in range(2):
        status, body, _ = exchange(server, issuer.token(sub=NIGHTLY))
        assert status == 200, body
        keys.append(body["access_token"])
    assert server.get(WHOAMI, keys[0]).json()["username"] == "nightly-bot"
    rotated = server.post(
        f"{KEYS}/rotate",
        server.admin_key,
        json={"key_id": server.get(WHOAMI, keys[1]).json()["key_id"], "grace_seconds": 300},
    )
    assert rotated.status_code == 200, rotated.text
    keys.append(rotated.json()["key"])  # its replacement; keys[1] works on, rotating
    for key in keys:
        assert server.get(WHOAMI, key).status_code == 200
    deleted = server.post(f"{POLICIES}/delete", server.admin_key, json={"policy_id": made["id"]})
    assert deleted.status_code == 200, deleted.text
    time.sleep(1.1)  # the staleness bound: every worker
    for key in keys:
        for _ in range(4):  # on both workers
            refused = server.get(WHOAMI, key, headers={"Connection": "close"})
            assert refused.status_code == 401, refused.text
    events = [e for e in _audit(server, "revoked") if made["id"] in (e.get("detail") or "")]
    assert len(events) == 3 and all("policy deleted" in e["detail"] for e in events)


# -- the exchange's own limits --------------------------------------------------------------------
def test_a_replayed_token_is_refused_on_every_worker(server, issuer, policy):
    token = issuer.token()
    first = exchange(server, token)
    assert first[0] == 200, first[1]
    for _ in range(3):  # each from another address (and, by chance, worker)
        status, body, _ = exchange(server, token)
        assert status == 401, body
        assert "exchanged a moment ago" in body["message"]
    # without a jti the token itself is what counts
    no_jti = issuer.token(jti=None)
    assert exchange(server, no_jti)[0] == 200
    assert exchange(server, no_jti)[0] == 401


def test_a_token_over_16_kib_is_a_400(server, issuer, policy):
    huge = issuer.token(padding="x" * 20000)
    status, body, _ = exchange(server, huge)
    assert status == 400, body
    assert "at most 16,384" in body["message"]


def test_an_exchange_body_over_64_kib_is_refused_before_it_is_read(server, issuer, policy):
    """The endpoint is public: the gate refuses a large body from its Content-Length, and
    counts one sent in chunks, so nobody makes the server buffer megabytes."""
    body = urlencode({"grant_type": GRANT, "subject_token": "x" * (2 * 1024 * 1024)}).encode()
    status, _, answer = post_from(
        server, f"127.0.{next(_sources)}.1", body, "application/x-www-form-urlencoded"
    )
    assert status == 413 and answer["error_code"] == "REQUEST_TOO_LARGE", answer
    assert "65,536 bytes (64 KiB)" in answer["message"]

    def chunks():
        yield b"grant_type=x&subject_token="
        for _ in range(100):
            yield b"x" * 4096

    chunked = requests.post(
        server.url + EXCHANGE,
        data=chunks(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=30,
    )
    assert chunked.status_code == 413, chunked.text


def test_a_subject_glob_never_spans_a_colon(server, issuer, policy):
    # The module's policy is repo:octo-org/*:ref:refs/heads/main.
    sneaky = "repo:octo-org/x:environment:prod:ref:refs/heads/main"
    status, body, _ = exchange(server, issuer.token(sub=sneaky))
    assert status == 401 and "no federation policy matches subject" in body["message"], body
    newline = "repo:octo-org/x\n:ref:refs/heads/main"
    status, body, _ = exchange(server, issuer.token(sub=newline))
    assert status == 401, body
    assert exchange(server, issuer.token(sub="repo:octo-org/x:ref:refs/heads/main"))[0] == 200


def test_subject_globs():
    from mlflow_hokusai.keys.trust_policies import subject_matches

    glob = "repo:octo-org/*:ref:refs/heads/main"
    assert subject_matches("repo:octo-org/app:ref:refs/heads/main", glob)
    assert subject_matches("repo:octo-org/:ref:refs/heads/main", glob)
    assert not subject_matches("repo:octo-org/a:environment:prod:ref:refs/heads/main", glob)
    assert not subject_matches("repo:octo-org/a\u200b:ref:refs/heads/main", glob)
    assert subject_matches("repo:o/a:ref:refs/tags/v1.2", "repo:o/a:ref:refs/tags/v?.*")
    assert not subject_matches("repo:o/a:ref:refs/tags/v1:x", "repo:o/a:ref:refs/tags/v?*")
    assert subject_matches("a[1].b", "a[1].b") and not subject_matches("a1xb", "a[1].b")
