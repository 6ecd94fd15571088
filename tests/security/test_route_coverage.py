"""Every route of the built app, called without credentials, answers 401 — except the public
allowlist, which is printed. The route list comes from the app ``create_app`` builds, in a
subprocess with the running server's own environment, so new MLflow routes are covered the
day they appear."""

import re

from tests.security.raw import send

PREFIX = "/api/mlflow"
# The design's public routes: health, version, server-info, static UI assets, the token
# exchange (the workload's signed OIDC token is its credential: tests/test_federation.py), the
# secret scanning endpoint (GitHub's signature over the report is its credential; unsigned or
# oversized reports change nothing: tests/test_secret_scanning.py), and, only with sign-in
# configured (not here: they are protected paths then), the sign-in routes (tests/test_sso.py).
# Nothing else.
PUBLIC = re.compile(
    r"/health|/version|/favicon\.ico|/(?:ajax-)?api/\d+\.\d+/mlflow/server-info"
    r"|/static-files/.*|/(?:ajax-)?api/2\.0/mlflow/hokusai/token-exchange"
    r"|/(?:ajax-)?api/2\.0/mlflow/hokusai/secret-scanning"
)


def _fill(path: str) -> str:
    """A concrete path for a Flask (<conv:name>) or FastAPI ({name:conv}) template."""
    path = re.sub(r"<(?:int|float):[^>]+>", "1", path)
    path = re.sub(r"<path:[^>]+>", "dummy/x", path)
    path = re.sub(r"<[^>]+>", "dummy", path)
    path = re.sub(r"\{[^}:]+:path\}", "dummy/x", path)
    return re.sub(r"\{[^}]+\}", "dummy", path)


def _requests(routes):
    calls = set()
    for route in routes:
        if route["kind"] == "fastapi-websocket":
            continue
        path = _fill(route["path"])
        for method in route["methods"]:
            calls.add((method, path))
            if method not in ("HEAD", "OPTIONS"):
                calls.add((method, PREFIX + path))
    return sorted(calls)


def test_every_route_needs_a_key_except_the_public_allowlist(server, routes):
    public, protected, wrong = [], 0, []
    for method, path in _requests(routes):
        canonical = path[len(PREFIX) :] if path.startswith(PREFIX + "/") else path
        body = b"{}" if method in ("POST", "PUT", "PATCH", "DELETE") else b""
        reply = send(server.url, method, path, body=body)
        if PUBLIC.fullmatch(canonical):
            public.append(f"{method} {path} -> {reply.status}")
            assert reply.status != 401 or method == "OPTIONS", (method, path)
            continue
        protected += 1
        ok = reply.status == 401 and "Basic" in reply.headers.get("www-authenticate", "")
        if ok and method != "HEAD":
            ok = reply.json().get("error_code") == "UNAUTHENTICATED"
        if not ok:
            wrong.append(f"{method} {path} -> {reply.status} {reply.text[:120]}")
    websockets = [r["path"] for r in routes if r["kind"] == "fastapi-websocket"]
    print(
        f"\n{protected} protected (method, path) pairs answered 401; websocket routes: "
        f"{websockets or 'none'}; public allowlist reached:\n  " + "\n  ".join(public)
    )
    assert not wrong, "\n".join(wrong)
    assert public  # the allowlist exists and was exercised


def test_public_routes_are_the_allowlist_only(server, routes):
    """Positive control: the public routes do answer without a key."""
    for path in ("/health", "/version", "/api/3.0/mlflow/server-info", PREFIX + "/health"):
        assert send(server.url, "GET", path).status == 200, path
