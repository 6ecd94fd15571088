"""The self-service key page (``/hokusai/keys``) in headless Chromium against a real server: sign
in with a key, create one and use it from Python, rotate and revoke, an admin revoking another
user's key and reading the audit trail, what a non-admin does not see, errors in words, both
roots, a phone's width, the keyboard, and a page on another origin that tries to act through a
signed-in browser. Each state is saved as a screenshot in the test's tmp dir."""

from __future__ import annotations

import base64
import http.server
import threading
import time

import pytest
import requests
from playwright.sync_api import expect

from tests.browser import screenshot, signed_in
from tests.server import free_port

KEYS = "/api/2.0/mlflow/hokusai/api-keys"
WHOAMI = "/api/2.0/mlflow/hokusai/whoami"

pytestmark = pytest.mark.browser


def _user(server, name: str, **body) -> tuple[str, str, str]:
    """(username, key, key id): a user with one key, made by the admin over REST."""
    username = f"{name}-{time.time_ns()}"
    made = server.post(
        f"{KEYS}/create", server.admin_key, json={"username": username, "name": "setup", **body}
    )
    assert made.status_code == 200, made.text
    return username, made.json()["key"], made.json()["api_key"]["id"]


def _keys_of(server, username: str) -> list[dict]:
    listed = server.get(f"{KEYS}/list", server.admin_key, params={"username": username})
    assert listed.status_code == 200, listed.text
    return listed.json()["api_keys"]


def _open(chromium, server, username, key, prefix="", **options):
    context = signed_in(chromium, username, key, **options)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    response = page.goto(f"{server.url}{prefix}/hokusai/keys")
    assert response.status == 200
    expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=30_000)
    return context, page, errors


def _refused_within_the_staleness_bound(server, key: str) -> None:
    """A revoked key is refused by every worker within the documented 1 s staleness bound: the
    check may land on a worker whose cache saw the key active a moment ago."""
    deadline = time.monotonic() + 1.5
    while True:
        status = requests.get(server.url + WHOAMI, auth=("x", key), timeout=30).status_code
        if status == 401 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert status == 401


def _row(page, key_id: str):
    return page.locator(f'#keys tbody tr[data-key-id="{key_id}"]')


@pytest.mark.parametrize("prefix", ["", "/api/mlflow"])
def test_sign_in_create_a_key_and_use_it(server, chromium, tmp_path, prefix):
    username, key, _ = _user(server, "page-create")
    context, page, errors = _open(chromium, server, "anything", key, prefix)
    try:
        expect(page.locator("#who")).to_have_text(f"Signed in as {username}")
        page.get_by_label("Name").fill("from the page")
        page.get_by_label("Scope").select_option("read")
        page.get_by_label("Expires in (days)").fill("30")
        page.get_by_role("button", name="Create key").click()
        expect(page.locator("#new-key")).to_be_visible()
        new_key = page.locator("#new-key-value").input_value()
        screenshot(page, tmp_path, "key-page-created.png")
        assert new_key.startswith("hk_")
        expect(page.locator("#new-key")).to_contain_text("will not be shown again")
        lines = page.locator("#new-key-env").input_value().splitlines()
        assert lines == [
            f"export MLFLOW_TRACKING_URI={server.url}{prefix}",
            f"export MLFLOW_TRACKING_TOKEN={new_key}",
        ]
        # The shown key works from Python, with the scope and owner the form gave it.
        who = requests.get(
            f"{server.url}{prefix}{WHOAMI}", headers={"Authorization": f"Bearer {new_key}"}
        )
        assert who.status_code == 200 and who.json()["username"] == username
        assert who.json()["scope"] == "read"
        made = next(k for k in _keys_of(server, username) if k["name"] == "from the page")
        row = _row(page, made["id"])
        expect(row).to_contain_text(made["prefix"])
        expect(row).to_contain_text("read")
        assert new_key not in page.locator("#keys").inner_text()  # only the once-shown box
        page.get_by_role("button", name="I have saved it").click()
        expect(page.locator("#new-key")).to_be_hidden()
        assert new_key not in page.content()
        storage = page.evaluate("JSON.stringify([localStorage, sessionStorage, document.cookie])")
        assert "hk_" not in storage
        assert errors == []
    finally:
        context.close()


def test_rotate_and_revoke_from_the_page(server, chromium, tmp_path):
    username, key, key_id = _user(server, "page-rotate")
    spare = server.post(f"{KEYS}/create", key, json={"name": "spare"}).json()
    context, page, errors = _open(chromium, server, username, key)
    try:
        page.once("dialog", lambda dialog: dialog.accept("0"))
        _row(page, spare["api_key"]["id"]).get_by_role("button", name="Rotate").click()
        expect(page.locator("#new-key")).to_be_visible()
        replacement = page.locator("#new-key-value").input_value()
        page.screenshot(path=str(tmp_path / "rotated.png"), full_page=True)
        _refused_within_the_staleness_bound(server, spare["key"])
        assert requests.get(server.url + WHOAMI, auth=("x", replacement)).status_code == 200
        replaced = next(k for k in _keys_of(server, username) if k["id"] == spare["api_key"]["id"])
        assert replaced["status"] == "revoked" and replaced["replaced_by"]
        expect(_row(page, replaced["id"])).to_contain_text("revoked")

        # Revoke asks first; saying no changes nothing.
        new_id = replaced["replaced_by"]
        page.once("dialog", lambda dialog: dialog.dismiss())
        _row(page, new_id).get_by_role("button", name="Revoke").click()
        time.sleep(0.5)
        assert requests.get(server.url + WHOAMI, auth=("x", replacement)).status_code == 200
        page.once("dialog", lambda dialog: dialog.accept())
        _row(page, new_id).get_by_role("button", name="Revoke").click()
        expect(_row(page, new_id)).to_contain_text("revoked")
        page.screenshot(path=str(tmp_path / "revoked.png"), full_page=True)
        _refused_within_the_staleness_bound(server, replacement)
        assert errors == []
    finally:
        context.close()


def test_an_admin_finds_and_revokes_another_users_key(server, chromium, tmp_path):
    victim, victim_key, victim_id = _user(server, "page-victim")
    context, page, errors = _open(chromium, server, "admin", server.admin_key)
    try:
        expect(page.locator("#audit-title")).to_be_visible()
        page.locator("#filter-form").get_by_label("User").fill(victim)
        page.locator("#filter-form").get_by_role("button", name="Show").click()
        row = _row(page, victim_id)
        expect(row).to_contain_text(victim)
        expect(page.locator("#keys tbody tr")).to_have_count(1)
        page.once("dialog", lambda dialog: dialog.accept())
        row.get_by_role("button", name="Revoke").click()
        expect(row).to_contain_text("revoked")
        _refused_within_the_staleness_bound(server, victim_key)

        audit = page.locator("#audit-form")
        audit.get_by_label("User").fill(victim)
        audit.get_by_label("Event").select_option("revoked")
        audit.get_by_label("Since").fill("1h")
        audit.get_by_role("button", name="Show").click()
        revoked_row = page.locator("#audit tbody tr", has_text=victim_id)
        expect(revoked_row).to_have_count(1)
        expect(revoked_row).to_contain_text("admin")
        page.screenshot(path=str(tmp_path / "admin.png"), full_page=True)
        assert errors == []
    finally:
        context.close()


def test_a_non_admin_sees_no_other_users_keys_and_no_admin_controls(server, chromium, tmp_path):
    other, _, other_id = _user(server, "page-other")
    username, key, key_id = _user(server, "page-plain")
    context, page, errors = _open(chromium, server, username, key)
    try:
        expect(_row(page, key_id)).to_be_visible()
        expect(_row(page, other_id)).to_have_count(0)
        assert other not in page.content()
        for selector in ("#filter-form", "#audit-title", "input[name=username]"):
            expect(page.locator(selector).first).to_be_hidden()
        expect(page.locator("#keys-title")).to_have_text("Your keys")
        page.screenshot(path=str(tmp_path / "non-admin.png"), full_page=True)
        assert errors == []
    finally:
        context.close()


def test_errors_are_shown_in_words_and_nothing_is_created(server, chromium, tmp_path):
    username, key, _ = _user(server, "page-errors")
    before = len(_keys_of(server, username))
    context, page, errors = _open(chromium, server, username, key)
    try:
        page.get_by_label("Expires in (days)").fill("ninety")
        page.get_by_role("button", name="Create key").click()
        alert = page.get_by_role("alert")
        expect(alert).to_be_visible()
        # The field's label, as the form shows it, not the REST API's name for it.
        expect(alert).to_contain_text("Expires in (days) must be a whole number")
        assert "expires_in_days" not in alert.inner_text()
        assert "{" not in alert.inner_text()  # words, not JSON
        field = page.get_by_label("Expires in (days)")
        expect(field).to_have_attribute("aria-invalid", "true")
        expect(field).to_be_focused()
        page.get_by_label("Expires in (days)").fill("")
        page.get_by_label("Rate limit").fill("lots")
        page.get_by_role("button", name="Create key").click()
        expect(alert).to_contain_text("Rate limit must be")
        assert "rate_limit" not in alert.inner_text()
        expect(page.get_by_label("Expires in (days)")).not_to_have_attribute("aria-invalid", "true")
        screenshot(page, tmp_path, "key-page-error.png")
        expect(page.locator("#new-key")).to_be_hidden()
        assert len(_keys_of(server, username)) == before
        assert errors == []
    finally:
        context.close()


def test_a_key_limited_to_resources_from_the_page(server, chromium, tmp_path):
    """The create form takes resource limits; the table shows them; the key is limited."""
    username, key, _ = _user(server, "page-limits")
    context, page, errors = _open(chromium, server, username, key)
    try:
        page.get_by_label("Name").fill("ci-train")
        page.get_by_label("Only experiments").fill("ci-training=READ, 12")
        page.get_by_label("Only models").fill("ci-*")
        page.get_by_role("button", name="Create key").click()
        expect(page.locator("#new-key")).to_be_visible()
        limited = page.locator("#new-key-value").input_value()
        made = next(k for k in _keys_of(server, username) if k["name"] == "ci-train")
        assert made["limits"]["experiments"] == [
            {"name": "ci-training", "permission": "READ"},
            {"id": "12", "permission": "MANAGE"},
        ]
        assert made["limits"]["registered_models"] == [{"name": "ci-*", "permission": "MANAGE"}]
        row = _row(page, made["id"])
        expect(row).to_contain_text("experiments: ci-training (READ), 12 (MANAGE)")
        expect(row).to_contain_text("models: ci-* (MANAGE)")
        setup = next(k for k in _keys_of(server, username) if k["name"] == "setup")
        expect(_row(page, setup["id"])).to_contain_text("all")  # the key without limits
        page.screenshot(path=str(tmp_path / "limited.png"), full_page=True)
        searched = requests.post(
            server.url + "/api/2.0/mlflow/experiments/search",
            headers={"Authorization": f"Bearer {limited}"},
            json={"max_results": 100},
            timeout=30,
        )
        assert searched.status_code == 200, searched.text
        # Only what the key names (experiment 12 exists when other tests made twelve).
        found = searched.json().get("experiments", [])
        assert all(e["experiment_id"] == "12" or e["name"] == "ci-training" for e in found)
        page.get_by_label("Only models").fill("a*b")
        page.get_by_role("button", name="Create key").click()
        expect(page.get_by_role("alert")).to_contain_text("'*' may only end a prefix")
        assert errors == []
    finally:
        context.close()


def test_a_read_only_key_sees_its_keys_and_is_told_it_cannot_create(server, chromium):
    """What a read-only key cannot do is disabled, with a sentence saying why, rather than
    offered and then refused with the gate's ``POST … is not a read``."""
    username, _, write_id = _user(server, "page-reader")
    reader = server.post(
        f"{KEYS}/create", server.admin_key, json={"username": username, "scope": "read"}
    ).json()
    before = len(_keys_of(server, username))
    context, page, errors = _open(chromium, server, username, reader["key"])
    try:
        expect(page.locator("#who")).to_contain_text("read-only key")
        expect(_row(page, reader["api_key"]["id"])).to_be_visible()
        note = page.locator("#cannot-change")
        expect(note).to_be_visible()
        expect(note).to_contain_text("read-only key")
        expect(note).to_contain_text("not create, rotate or revoke")
        expect(page.get_by_role("button", name="Create key")).to_be_disabled()
        expect(page.get_by_label("Name")).to_be_disabled()
        for key_id in (write_id, reader["api_key"]["id"]):
            for action in ("Rotate", "Revoke"):
                expect(_row(page, key_id).get_by_role("button", name=action)).to_be_disabled()
        page.get_by_role("button", name="Create key").click(force=True)
        _row(page, write_id).get_by_role("button", name="Revoke").click(force=True)
        time.sleep(0.5)
        expect(page.get_by_role("alert")).to_be_hidden()
        assert "is not a read" not in page.content()
        after = _keys_of(server, username)
        assert len(after) == before and all(k["status"] == "active" for k in after)
        assert errors == []
    finally:
        context.close()


def test_at_a_phones_width_and_with_the_keyboard(server, chromium, tmp_path):
    username, key, _ = _user(server, "page-phone")
    context, page, errors = _open(
        chromium, server, username, key, viewport={"width": 390, "height": 844}
    )
    try:
        width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], width  # no sideways scrolling: the rows are cards
        page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
        # Keyboard only: tab to the name field, type, tab to the button, press Enter.
        for _ in range(10):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.name") == "name":
                break
        assert page.evaluate("document.activeElement.name") == "name"
        outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert outline not in ("", "none")  # focus is visible
        page.keyboard.type("keyboard-made")
        page.locator("#create-form button[type=submit]").focus()
        page.keyboard.press("Enter")
        expect(page.locator("#new-key")).to_be_visible()
        assert any(k["name"] == "keyboard-made" for k in _keys_of(server, username))
        assert errors == []
    finally:
        context.close()


class _Attacker(http.server.BaseHTTPRequestHandler):
    page = b""

    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(self.page)

    def log_message(self, *args):
        pass


def test_a_page_on_another_origin_cannot_act_through_a_signed_in_browser(
    server, chromium, tmp_path
):
    """A form POST (text/plain, the classic JSON-CSRF trick) and a no-cors fetch, from a page on
    127.0.0.2, to the create and revoke endpoints, in a browser signed in to our server."""
    username, key, key_id = _user(server, "page-csrf")
    before = {k["id"] for k in _keys_of(server, username)}
    create = f"{server.url}{KEYS}/create"
    revoke = f"{server.url}/ajax-api/2.0/mlflow/hokusai/api-keys/revoke"
    _Attacker.page = f"""<!doctype html><html><body>
<iframe name="sink"></iframe>
<form id="f" method="POST" action="{create}" enctype="text/plain" target="sink">
<input name='{{"name": "csrf-form", "x": "' value='"}}'></form>
<script>
fetch("{revoke}", {{method: "POST", mode: "no-cors", credentials: "include",
  headers: {{"Content-Type": "text/plain"}}, body: JSON.stringify({{key_id: "{key_id}"}})}});
fetch("{create}", {{method: "POST", mode: "no-cors", credentials: "include",
  body: JSON.stringify({{name: "csrf-fetch"}})}});
document.getElementById("f").submit();
</script></body></html>""".encode()
    attacker = http.server.ThreadingHTTPServer(("127.0.0.2", free_port()), _Attacker)
    threading.Thread(target=attacker.serve_forever, daemon=True).start()
    # The worst case: the browser attaches the credentials to every request, to any origin,
    # without being asked (as a browser resends cached Basic credentials on its own).
    basic = base64.b64encode(f"{username}:{key}".encode()).decode()
    context = chromium.new_context(extra_http_headers={"Authorization": f"Basic {basic}"})
    try:
        page = context.new_page()
        page.goto(f"{server.url}/hokusai/keys")
        expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=30_000)
        seen = server.log_text().count("hokusai/api-keys/")
        page.goto(f"http://127.0.0.2:{attacker.server_address[1]}/")
        time.sleep(3)
        # All three arrived, with the credentials, and were refused as cross-origin.
        attempts = [line for line in server.log_text().split("\n") if "hokusai/api-keys/" in line][
            seen:
        ]
        assert len(attempts) == 3 and all(" 403" in line for line in attempts), attempts
        page.screenshot(path=str(tmp_path / "csrf.png"), full_page=True)
        after = _keys_of(server, username)
        assert {k["id"] for k in after} == before, after  # nothing created
        assert next(k for k in after if k["id"] == key_id)["status"] == "active"  # nor revoked
        assert requests.get(server.url + WHOAMI, auth=("x", key)).status_code == 200
    finally:
        context.close()
        attacker.shutdown()


def test_the_page_forbids_framing_inline_script_and_caching(server):
    username, key, _ = _user(server, "page-headers")
    for path in ("/hokusai/keys", "/api/mlflow/hokusai/keys", "/hokusai/keys.js"):
        response = requests.get(server.url + path, auth=("x", key), timeout=30)
        assert response.status_code == 200, path
        policy = response.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy
        assert response.headers["Cache-Control"] == "no-store"
    assert requests.get(server.url + "/hokusai/keys", timeout=30).status_code == 401
    challenge = requests.get(server.url + "/hokusai/keys", timeout=30)
    assert challenge.headers["WWW-Authenticate"].startswith("Basic")  # the browser's prompt


def test_the_pages_audit_filter_offers_every_event():
    """The page's event filter is a copy of the audit's event list: it must not fall behind."""
    import re
    from pathlib import Path

    from mlflow_hokusai.routes import key_page
    from mlflow_hokusai.store.audit import EVENTS

    script = (Path(key_page.__file__).parent / "keys.js").read_text()
    listed = re.search(r"const EVENTS = \[(.*?)\];", script, re.S).group(1)
    assert sorted(re.findall(r'"([a-z-]+)"', listed)) == sorted(EVENTS)
