"""``MLFLOW_TRACKING_AUTH=hokusai``: the stock client sends the key from HOKUSAI_API_KEY (else
MLFLOW_TRACKING_TOKEN) on every request, and sends nothing at all when no key is configured."""

import os
import socket
import threading

import mlflow
import pytest
from mlflow.exceptions import MlflowException
from mlflow.utils.credentials import get_default_host_creds
from mlflow.utils.rest_utils import http_request

from tests.helpers import api_key_for

WHOAMI = "/api/2.0/mlflow/hokusai/whoami"


@pytest.fixture
def plugin_env(monkeypatch):
    """A clean client environment with the plugin on; returns a setter for the rest."""
    for name in list(os.environ):
        if name.startswith(("MLFLOW_", "HOKUSAI_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("MLFLOW_TRACKING_AUTH", "hokusai")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")

    def use(uri, **env):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        mlflow.set_tracking_uri(uri)

    yield use
    mlflow.set_tracking_uri(None)


def whoami(uri: str) -> dict:
    """Ask the server who sent the request, through MLflow's own request machinery."""
    response = http_request(get_default_host_creds(uri), WHOAMI, "GET")
    assert response.status_code == 200, response.text
    return response.json()


def test_the_entry_point_is_registered():
    from mlflow.tracking.request_auth.registry import _request_auth_provider_registry

    from mlflow_hokusai.client.auth_provider import HokusaiAuthProvider

    assert any(isinstance(p, HokusaiAuthProvider) for p in _request_auth_provider_registry)


def test_stock_client_with_only_hokusai_api_key(server, plugin_env):
    # Under the prefix here; tests/test_examples.py runs examples with the plugin at the root.
    prefix = "/api/mlflow"
    key = api_key_for(server, "plugin-user")
    plugin_env(server.url + prefix, HOKUSAI_API_KEY=key)
    assert whoami(server.url + prefix)["username"] == "plugin-user"

    # Tracking, proxied artifact upload and download, and the registry, with no other setting.
    mlflow.set_experiment(f"plugin-{os.getpid()}")
    with mlflow.start_run() as run:
        mlflow.log_metric("accuracy", 0.9)
        mlflow.log_text("hello from the plugin", "notes/hello.txt")
    assert mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/notes/hello.txt") == (
        "hello from the plugin"
    )
    client = mlflow.MlflowClient()
    name = f"plugin-model-{os.getpid()}"
    client.create_registered_model(name)
    client.set_registered_model_tag(name, "owner", "plugin-user")
    assert client.get_registered_model(name).tags["owner"] == "plugin-user"
    assert client.get_run(run.info.run_id).data.metrics["accuracy"] == 0.9


def test_hokusai_api_key_wins_over_other_credentials(server, plugin_env):
    mine = api_key_for(server, "plugin-preferred")
    other = api_key_for(server, "plugin-other")
    plugin_env(
        server.url,
        HOKUSAI_API_KEY=mine,
        MLFLOW_TRACKING_TOKEN=other,
        MLFLOW_TRACKING_USERNAME="someone",
        MLFLOW_TRACKING_PASSWORD="not-a-key",
    )
    assert whoami(server.url)["username"] == "plugin-preferred"


def test_falls_back_to_mlflow_tracking_token(server, plugin_env):
    key = api_key_for(server, "plugin-fallback")
    plugin_env(server.url, MLFLOW_TRACKING_TOKEN=key, HOKUSAI_API_KEY="  ")
    assert whoami(server.url)["username"] == "plugin-fallback"
    assert mlflow.search_experiments(max_results=1) is not None


class ConnectionCounter:
    """A loopback listener that counts connections and answers none of them."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.count += 1
            conn.close()

    def close(self):
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def listener():
    counter = ConnectionCounter()
    yield counter
    counter.close()


def test_no_key_is_a_clear_error_and_nothing_is_sent(plugin_env, listener, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    plugin_env(listener.url)
    calls = [
        lambda: mlflow.search_experiments(),
        lambda: mlflow.MlflowClient().create_registered_model("never-sent"),
        lambda: whoami(listener.url),
    ]
    for call in calls:
        with pytest.raises(MlflowException, match="HOKUSAI_API_KEY") as info:
            call()
        assert "No request was sent" in str(info.value)
    assert listener.count == 0

    # The same listener does see a request once a key is configured (the count is real).
    monkeypatch.setenv("HOKUSAI_API_KEY", "hk_live_example")
    with pytest.raises(MlflowException):
        mlflow.search_experiments()
    assert listener.count >= 1


def test_the_key_is_not_shown_in_the_auth_object(monkeypatch):
    from mlflow_hokusai.client.auth_provider import HokusaiAuthProvider

    monkeypatch.setenv("HOKUSAI_API_KEY", "hk_live_secret_value")
    assert "secret" not in repr(HokusaiAuthProvider().get_auth())
