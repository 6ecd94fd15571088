"""A wrong tracking URI is a 404 that says so (issue 26), for every caller and every client.

After authentication, a path no route serves is our 404 JSON naming the two roots and the
extra part the tracking URI probably ends in; a method a route does not take is a 405 JSON; no
HTML error page reaches an API client. Before authentication nothing changes: 401.
"""

from __future__ import annotations

import subprocess
import sys

import mlflow
import mlflow.server
import pytest
import requests
from mlflow.exceptions import MlflowException

WRONG_URIS = ["/mlflow", "/api", "/api/mlflow/api/2.0"]


@pytest.fixture(scope="module")
def keys(server):
    return {"admin": server.admin_key, "user": server.create_key("lost-user")}


def _assert_hint(text: str, suffix: str) -> None:
    assert "ENDPOINT_NOT_FOUND" in text, text
    assert "PERMISSION_DENIED" not in text and "<html" not in text.lower(), text
    extra = suffix.removeprefix("/api/mlflow") or suffix
    assert f"ends in an extra '{extra}'" in text, text
    assert "/api/mlflow/" in text, text


@pytest.mark.parametrize("who", ["admin", "user"])
@pytest.mark.parametrize("suffix", WRONG_URIS)
def test_the_stock_client_with_a_wrong_tracking_uri_gets_the_roots(
    server, keys, tracking, who, suffix
):
    with tracking(server, keys[who], suffix):
        with pytest.raises(MlflowException) as raised:
            mlflow.search_experiments()
    _assert_hint(str(raised.value), suffix)


@pytest.mark.parametrize("who", ["admin", "user"])
def test_the_app_client_and_the_cli_with_a_wrong_tracking_uri(server, keys, tracking, who):
    with tracking(server, keys[who], "/mlflow"):
        client = mlflow.server.get_app_client("hokusai", tracking_uri=server.url + "/mlflow")
        with pytest.raises(Exception) as raised:
            client.whoami()
    _assert_hint(str(raised.value), "/mlflow")
    result = subprocess.run(
        [sys.executable, "-m", "mlflow_hokusai.cli", "keys", "list"]
        + ["--tracking-uri", server.url + "/mlflow"],
        env={**server.env(), "MLFLOW_TRACKING_TOKEN": keys[who]},
        cwd=server.workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    _assert_hint(result.stdout + result.stderr, "/mlflow")


@pytest.mark.parametrize("path", ["/mlflow/api/2.0/mlflow/experiments/search", "/nothing"])
def test_without_a_key_an_unknown_path_is_still_a_401(server, path):
    reply = requests.get(server.url + path, timeout=30)
    assert reply.status_code == 401 and "ENDPOINT_NOT_FOUND" not in reply.text


def test_a_method_the_route_does_not_take_is_a_405_json(server, keys):
    for key in keys.values():
        reply = requests.delete(
            server.url + "/api/2.0/mlflow/experiments/search",
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        assert reply.status_code == 405, reply.text
        assert reply.json()["error_code"] == "METHOD_NOT_ALLOWED"
        assert "GET" in reply.headers["Allow"]


def test_no_html_error_page_reaches_an_api_client(server, keys):
    auth = {"Authorization": f"Bearer {keys['user']}"}
    for path in ["/static-files/no-such-file.js", "/no-such-page"]:
        reply = requests.get(server.url + path, headers=auth, timeout=30)
        assert reply.status_code == 404, (path, reply.text[:200])
        assert reply.headers["Content-Type"].startswith("application/json"), path
    # A browser asking for a page keeps MLflow's answer (for an admin its 404 page; MLflow's
    # engine refuses a non-admin a path it does not know, 403).
    admin = {"Authorization": f"Bearer {keys['admin']}", "Accept": "text/html"}
    reply = requests.get(server.url + "/no-such-page", headers=admin, timeout=30)
    assert reply.status_code == 404 and "application/json" not in reply.headers["Content-Type"]
    # The UI itself still loads.
    assert requests.get(server.url + "/", headers={**auth, "Accept": "text/html"}, timeout=30).ok
