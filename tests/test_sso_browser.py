"""Sign-in in headless Chromium (Playwright, the system browser) against a real server and a
real OpenID provider: a person opens the UI, signs in at the provider, sees the MLflow UI as
themselves, makes a key on the key page that works with the stock client, signs out; and a
page on another origin (another port of the same host: the same site, so ``SameSite=Lax``
sends the cookie) cannot change anything through the signed-in browser."""

from __future__ import annotations

import http.server
import threading
import time

import mlflow
import pytest
import requests
from playwright.sync_api import expect

from tests.browser import screenshot
from tests.server import Server, free_port
from tests.test_sso import CLIENT, SECRET, USERS, provider_for

pytestmark = pytest.mark.browser
KEYS = "/api/2.0/mlflow/hokusai/api-keys"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    server = Server(str(tmp_path_factory.mktemp("sso-browser")), workers=2)
    provider = provider_for(server, USERS).start()
    server.extra_env = {
        "HOKUSAI_OIDC_ISSUER": provider.issuer,
        "HOKUSAI_OIDC_CLIENT_ID": CLIENT,
        "HOKUSAI_OIDC_CLIENT_SECRET": SECRET,
        "HOKUSAI_OIDC_SCOPES": "openid profile email groups",
        "HOKUSAI_OIDC_ADMIN_GROUPS": "ml-admins",
    }
    try:
        server.start()
        yield server, provider
    finally:
        server.stop()
        provider.destroy()


def sign_in_page(chromium, server, username: str, start: str = "/", shot=None):
    context = chromium.new_context()
    page = context.new_page()
    page.goto(f"{server.url}{start}")
    page.wait_for_selector("input[name=username]", timeout=30_000)  # the provider's form
    if shot is not None:
        page.screenshot(path=str(shot))
    page.fill("input[name=username]", username)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server.url}{start}**", timeout=30_000)
    return context, page


def keys_of(server, username: str) -> list[dict]:
    listed = server.get(f"{KEYS}/list", server.admin_key, params={"username": username})
    assert listed.status_code == 200, listed.text
    return listed.json()["api_keys"]


def test_sign_in_use_the_ui_make_a_key_and_sign_out(setup, chromium, tmp_path, monkeypatch):
    server, _ = setup
    owner_key = server.create_key("bob")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", owner_key)
    mlflow.MlflowClient(server.url).create_experiment("bobs-experiment")
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN")

    context, page = sign_in_page(chromium, server, "bob", shot=tmp_path / "sign-in.png")
    try:
        expect(page.get_by_text("bobs-experiment").first).to_be_visible(timeout=60_000)
        page.screenshot(path=str(tmp_path / "ui-signed-in.png"), full_page=True)
        cookies = {c["name"]: c for c in context.cookies()}
        assert cookies["hokusai_session"]["httpOnly"] is True
        assert cookies["hokusai_session"]["sameSite"] == "Lax"

        page.goto(f"{server.url}/hokusai/keys")
        expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=30_000)
        expect(page.locator("#who")).to_have_text("Signed in as bob")
        expect(page.locator("#sign-out")).to_be_visible()
        page.get_by_label("Name").fill("from a session")
        page.get_by_role("button", name="Create key").click()
        expect(page.locator("#new-key")).to_be_visible()
        new_key = page.locator("#new-key-value").input_value()
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", new_key)
        found = mlflow.MlflowClient(server.url).get_experiment_by_name("bobs-experiment")
        assert found is not None
        monkeypatch.delenv("MLFLOW_TRACKING_TOKEN")
        page.get_by_role("button", name="I have saved it").click()
        expect(page.locator("#new-key")).to_be_hidden()
        screenshot(page, tmp_path, "sso-key-page.png")

        page.click("#sign-out")
        page.wait_for_load_state()
        assert "hokusai_session" not in {c["name"] for c in context.cookies()}
        again = requests.get(f"{server.url}/", headers={"Accept": "text/html"}, timeout=30)
        assert again.history and "/hokusai/login" in again.history[0].headers["Location"]
    finally:
        context.close()


class _Attacker(http.server.BaseHTTPRequestHandler):
    page = b""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(self.page)

    def log_message(self, *args):
        pass


def test_a_page_on_another_port_cannot_act_through_a_session(setup, chromium, tmp_path):
    server, _ = setup
    context, page = sign_in_page(chromium, server, "dave")
    create = f"{server.url}/ajax-api/2.0/mlflow/hokusai/api-keys/create"
    experiment = f"{server.url}/ajax-api/2.0/mlflow/experiments/create"
    _Attacker.page = f"""<!doctype html><html><body>
<iframe name="sink"></iframe>
<form id="f" method="POST" action="{create}" enctype="text/plain" target="sink">
<input name='{{"name": "csrf-form", "x": "' value='"}}'></form>
<form id="top" method="POST" action="{experiment}" enctype="text/plain">
<input name='{{"name": "csrf-top", "x": "' value='"}}'></form>
<script>
fetch("{create}", {{method: "POST", credentials: "include", mode: "no-cors",
  body: JSON.stringify({{name: "csrf-fetch"}})}});
document.getElementById("f").submit();
setTimeout(() => document.getElementById("top").submit(), 1000);
</script></body></html>""".encode()
    attacker = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Attacker)
    threading.Thread(target=attacker.serve_forever, daemon=True).start()
    try:
        seen = server.log_text().count("/create HTTP")
        page.goto(f"http://127.0.0.1:{attacker.server_address[1]}/")
        time.sleep(4)
        page.screenshot(path=str(tmp_path / "cross-site.png"), full_page=True)
        attempts = [ln for ln in server.log_text().split("\n") if "/create HTTP" in ln][seen:]
        assert len(attempts) == 3 and all(" 403" in line for line in attempts), attempts
        assert keys_of(server, "dave") == []
        experiments = server.get(
            "/api/2.0/mlflow/experiments/get-by-name",
            server.admin_key,
            params={"experiment_name": "csrf-top"},
        )
        assert experiments.status_code == 404
    finally:
        context.close()
        attacker.shutdown()
