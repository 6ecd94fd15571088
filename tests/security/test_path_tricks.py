"""Path tricks: no spelling of a protected path reaches its handler without a key.

Sent over a raw socket so ``..``, ``//``, ``;`` and percent-encodings arrive as written. A trick
passes the test when the answer is a refusal (401, or a 3xx/4xx that serves nothing) or the
genuine public resource the path really names (health's "OK", the version, server-info).
"""

import mlflow
import pytest

from tests.security.raw import send

SEARCH = "api/2.0/mlflow/experiments/search?max_results=5"
ARTIFACTS = "api/2.0/mlflow-artifacts/artifacts"
WHOAMI = "api/2.0/mlflow/hokusai/whoami"
SCANNING = "api/2.0/mlflow/hokusai/secret-scanning"  # public: GitHub's signature is the key

TRICKS = [
    f"/{SEARCH}",
    f"//{SEARCH}",
    "/api/2.0//mlflow/experiments/search?max_results=5",
    "/api/2.0/mlflow/experiments//search?max_results=5",
    "/api/2.0/mlflow/experiments/search/?max_results=5",
    f"/health/../{SEARCH}",
    f"/health/%2e%2e/{SEARCH}",
    f"/health/%2E%2E/{SEARCH}",
    f"/health%2f..%2f{SEARCH}",
    f"/health/..%2f{SEARCH}",
    f"/health/.%2e/{SEARCH}",
    f"/health/%252e%252e/{SEARCH}",
    f"/health;/../{SEARCH}",
    f"/health/..;/{SEARCH}",
    f"/{SEARCH.replace('search', 'search;.css')}",
    "/api/2.0/mlflow/experiments/search;/health",
    f"/static-files/../{SEARCH}",
    f"/static-files/..%2f{SEARCH}",
    f"/static-files/%2e%2e/%2e%2e/{SEARCH}",
    f"/static-files/..%5c{SEARCH}",
    f"/static-files\\..\\{SEARCH}",
    "/api/2.0/mlflow/server-info/../experiments/search?max_results=5",
    "/api/2.0/mlflow/server-info/%2e%2e/experiments/search?max_results=5",
    "/api/2.0/mlflow/server-info;/../experiments/search?max_results=5",
    "/api%2f2.0%2fmlflow%2fexperiments%2fsearch?max_results=5",
    "/%61pi/2.0/mlflow/experiments/search?max_results=5",
    "/API/2.0/mlflow/experiments/search?max_results=5",
    "/Api/2.0/MLflow/experiments/search?max_results=5",
    "/ajax-api/2.0/mlflow/experiments/search?max_results=5",
    "/AJAX-API/2.0/mlflow/experiments/search?max_results=5",
    f"/api/mlflow/{SEARCH}",
    f"/api/mlflow//{SEARCH}",
    "/api/mlflow/ajax-api/2.0/mlflow/experiments/search?max_results=5",
    f"/api/mlflow/../{SEARCH}",
    f"/api/mlflow/health/../{SEARCH}",
    f"/api/mlflow/health/..%2f{SEARCH}",
    f"/api/mlflow%2f{SEARCH}",
    f"/api/MLFLOW/{SEARCH}",
    f"/api/mlflow/api/mlflow/{SEARCH}",
    f"/api/mlflow;/{SEARCH}",
    f"/api/mlflow/static-files/../{SEARCH}",
    f"/{ARTIFACTS}",
    f"/{ARTIFACTS}/",
    f"/health/../{ARTIFACTS}",
    f"/static-files/../../{ARTIFACTS}",
    f"/api/mlflow/{ARTIFACTS}",
    "/ajax-api/2.0/mlflow-artifacts/artifacts",
    f"/{WHOAMI}",
    f"/health/../{WHOAMI}",
    f"/health?/../{SEARCH}",
    f"/health#/../{SEARCH}",
    f"/health%00/../{SEARCH}",
    f"/health%3f/../{SEARCH}",
    f"/health%23/../{SEARCH}",
    f"/version/../{SEARCH}",
    f"/favicon.ico/../{SEARCH}",
    "/graphql",
    "/health/../graphql",
    "/v1/traces",
    "/health/../v1/traces",
    "/ajax-api/3.0/jobs/search",
    "/health/../ajax-api/3.0/jobs/search",
    "/ajax-api/3.0/mlflow/server-info/../../3.0/jobs/search",
    f"/{SCANNING}/../whoami",
    f"/{SCANNING}/..%2fwhoami",
    f"/{SCANNING}%2f..%2fwhoami",
    f"/{SCANNING};/../whoami",
    f"/{SCANNING}/../../../2.0/mlflow/experiments/search?max_results=5",
    f"/{SCANNING}/../api-keys/list",
    f"/api/mlflow/{SCANNING}/../whoami",
    f"/api/mlflow/{SCANNING}/..%2fapi-keys/list",
    f"/{SCANNING}?/../whoami",
    f"/{SCANNING}#/../whoami",
]


def _public_bodies(server):
    return {
        "health": send(server.url, "GET", "/health").body,
        "version": mlflow.__version__.encode(),
        "server-info": send(server.url, "GET", "/api/3.0/mlflow/server-info").body,
    }


def _assert_refused(server, method, target, reply, public):
    assert reply.status != 500, (method, target, reply.status, reply.text[:300])
    if 200 <= reply.status < 300:
        # Only the public resource itself may come back, never a protected handler's answer.
        assert reply.body in public.values() or method in ("HEAD", "OPTIONS") and not reply.body, (
            method,
            target,
            reply.status,
            reply.text[:300],
        )
        assert b'"experiments"' not in reply.body and b'"username"' not in reply.body
        if method == "OPTIONS":
            # CORS preflight carries no data; it must not be an open door either.
            assert not reply.body or reply.body in public.values(), (target, reply.text[:300])


@pytest.mark.parametrize("method", ["GET", "POST", "HEAD", "OPTIONS"])
def test_no_trick_reaches_a_protected_handler(server, method):
    public = _public_bodies(server)
    outcomes = {}
    for target in TRICKS:
        body = b"{}" if method == "POST" else b""
        reply = send(server.url, method, target, body=body)
        _assert_refused(server, method, target, reply, public)
        outcomes.setdefault(reply.status, []).append(target)
    print(f"\n{method}: " + "; ".join(f"{s}: {len(t)}" for s, t in sorted(outcomes.items())))
    # The plain spellings are refused by the gate itself.
    assert f"/{SEARCH}" in outcomes.get(401, [])


@pytest.mark.parametrize("host", ["127.0.0.1", "evil.example"])
def test_absolute_form_request_targets(server, host):
    """``GET http://host/path HTTP/1.1`` (proxy form): same rules as the origin form."""
    public = _public_bodies(server)
    port = server.url.rsplit(":", 1)[1]
    for path in [f"/{SEARCH}", f"/health/../{SEARCH}", f"/api/mlflow/{SEARCH}", f"/{WHOAMI}"]:
        target = f"http://{host}:{port}{path}"
        reply = send(server.url, "GET", target)
        _assert_refused(server, "GET", target, reply, public)
        assert reply.status in (400, 401, 403, 404), (target, reply.status, reply.text[:200])


def test_tricks_with_a_key_do_not_change_identity(server):
    """With a valid key, tricks do not make a user into someone else (e.g. the admin)."""
    key = server.create_key("trick-user")
    for target in [f"/{WHOAMI}", f"/api/mlflow/{WHOAMI}", f"/health/../{WHOAMI}", f"//{WHOAMI}"]:
        reply = send(server.url, "GET", target, [("Authorization", f"Bearer {key}")])
        assert reply.status != 500
        if reply.status == 200:
            assert reply.json()["username"] == "trick-user"
