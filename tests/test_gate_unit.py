"""The gate's pure functions, table-driven and in-process (no server): prefix mapping, the
public allowlist and path cleanliness. The real-server tests (tests/security/) send the same
kinds of paths over a socket; these pin down the decisions themselves, fast."""

from __future__ import annotations

import pytest

from mlflow_hokusai.gate.paths import is_public, route_prefix, strip_prefix, swap_prefix

P = "/api/mlflow"


@pytest.mark.parametrize(
    "path, prefix, expected",
    [
        ("/api/mlflow/x", P, "/x"),
        ("/api/mlflow", P, "/"),
        ("/api/mlflow/", P, "/"),
        ("/api/mlflowx/y", P, "/api/mlflowx/y"),  # a longer word is not the prefix
        ("/x", P, "/x"),
        ("/api/mlflow/x", "", "/api/mlflow/x"),  # prefix off
    ],
)
def test_strip_prefix(path, prefix, expected):
    assert strip_prefix(path, prefix) == expected


NATIVE = {"/api/2.0/mlflow-artifacts/artifacts/1/a"}


@pytest.mark.parametrize(
    "path, url_prefix, static_prefix, canonical",
    [
        # no static prefix: the URL prefix is an alias of the root
        ("/api/mlflow/api/2.0/mlflow/runs/get", P, "", "/api/2.0/mlflow/runs/get"),
        ("/api/mlflow", P, "", "/"),
        ("/api/2.0/mlflow/runs/get", P, "", "/api/2.0/mlflow/runs/get"),
        ("/api/mlflowx", P, "", "/api/mlflowx"),
        ("/api/mlflow/x", "", "", "/api/mlflow/x"),
        # --static-prefix S: the URL prefix maps onto S; S's own paths stay
        ("/api/mlflow/api/2.0/mlflow/runs/get", P, "/s", "/s/api/2.0/mlflow/runs/get"),
        ("/s/api/2.0/mlflow/runs/get", P, "/s", "/s/api/2.0/mlflow/runs/get"),
        # under both: the longer prefix names it
        ("/api/mlflow/ui/x", P, "/api/mlflow/ui", "/api/mlflow/ui/x"),
        ("/api/mlflow/y", P, "/api/mlflow/ui", "/api/mlflow/ui/y"),
        # the same prefix twice is one prefix
        ("/api/mlflow/x", P, P, "/api/mlflow/x"),
        # native routes live at the root whatever the static prefix says
        (
            "/api/mlflow/api/2.0/mlflow-artifacts/artifacts/1/a",
            P,
            "/s",
            "/api/2.0/mlflow-artifacts/artifacts/1/a",
        ),
        (
            "/s/api/2.0/mlflow-artifacts/artifacts/1/a",
            P,
            "/s",
            "/api/2.0/mlflow-artifacts/artifacts/1/a",
        ),
    ],
)
def test_route_prefix_makes_paths_canonical(path, url_prefix, static_prefix, canonical):
    swap = route_prefix(path, url_prefix, static_prefix, lambda rest: rest in NATIVE)
    assert (path if swap is None else swap_prefix(path, swap)) == canonical


@pytest.mark.parametrize(
    "path, static_prefix, public",
    [
        ("/health", "", True),
        ("/version", "", True),
        ("/favicon.ico", "", True),
        ("/api/2.0/mlflow/server-info", "", True),
        ("/ajax-api/3.0/mlflow/server-info", "", True),
        ("/static-files/js/main.js", "", True),
        ("/s/health", "/s", True),
        ("/s/static-files/app.css", "/s", True),
        ("/api/2.0/mlflow/hokusai/token-exchange", "", True),  # the OIDC token is the key
        ("/ajax-api/2.0/mlflow/hokusai/token-exchange", "", True),
        ("/api/2.0/mlflow/hokusai/secret-scanning", "", True),  # GitHub's signature is the key
        ("/ajax-api/2.0/mlflow/hokusai/secret-scanning", "", True),
        ("/s/api/2.0/mlflow/hokusai/secret-scanning", "/s", True),
        # not public: everything else
        ("/", "", False),
        ("/api/2.0/mlflow/experiments/search", "", False),
        ("/api/2.0/mlflow/server-info/x", "", False),
        ("/health/x", "", False),
        ("/HEALTH", "", False),
        ("/health/", "", False),
        ("/api/2.0/mlflow/hokusai/whoami", "", False),
        ("/api/2.0/mlflow/hokusai/token-exchange/x", "", False),
        ("/api/2.0/mlflow/hokusai/token-exchange/../api-keys/create", "", False),
        ("/api/2.0/mlflow/hokusai/token-exchange;/x", "", False),
        ("/api/2.0/mlflow/hokusai/secret-scanning/", "", False),
        ("/api/2.0/mlflow/hokusai/secret-scanning/x", "", False),
        ("/api/2.0/mlflow/hokusai/secret-scanning/../api-keys/revoke", "", False),
        ("/api/2.0/mlflow/hokusai/secret-scanning%2f..%2fapi-keys/revoke", "", False),
        ("/api/2.0/mlflow/hokusai/secret-scanning;/x", "", False),
        ("/api/2.0/mlflow/hokusai/secret-scanningx", "", False),
        ("/api/2.1/mlflow/hokusai/secret-scanning", "", False),
        ("/api/2.0/mlflow/hokusai/federation/policies/list", "", False),
        # dot segments, doubled slashes, encodings, ';', backslashes, control characters
        ("/health/../api/2.0/mlflow/experiments/search", "", False),
        ("/static-files/../api/2.0/mlflow/experiments/search", "", False),
        ("/static-files/./x", "", False),
        ("/static-files//x", "", False),
        ("/static-files/%2e%2e/x", "", False),
        ("/static-files/..%2fx", "", False),
        ("/health;/x", "", False),
        ("/static-files/a;b", "", False),
        ("/static-files\\..\\x", "", False),
        ("/static-files/\x00", "", False),
        ("/static-files/a\nb", "", False),
        ("//health", "", False),
    ],
)
def test_public_allowlist(path, static_prefix, public):
    assert is_public(path, static_prefix) is public
