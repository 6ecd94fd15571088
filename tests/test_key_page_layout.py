"""The key page's layout and first moments in headless Chromium, at a desktop's width (1280 px)
and a phone's (390 px): no sideways scrolling, every key's Status, Rotate and Revoke within
the window, dates on one line, the checkbox beside its label, placeholders not cut off; an
admin's key list in pages; a resource-limited key's page that disables what it cannot do; a
create form that does nothing before the script is ready; an expiry under a day in minutes or
hours; each key's expiry warning and, for its owner, the addresses it was used from.

Screenshots go to the test's tmp dir; with ``HOKUSAI_DOCS_IMAGES=docs/images`` the ones the
docs show are written there too (how the docs' screenshots are kept current)."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from mlflow_hokusai.store.clock import utcnow
from mlflow_hokusai.store.engine import get_engine
from mlflow_hokusai.store.models import ApiKey
from tests.browser import screenshot, signed_in
from tests.security.raw import send
from tests.test_key_page import KEYS, WHOAMI, _keys_of, _open, _row, _user

pytestmark = pytest.mark.browser

DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


def _create(server, key: str, **body) -> dict:
    made = server.post(f"{KEYS}/create", key, json=body)
    assert made.status_code == 200, made.text
    return made.json()


def _assert_fits(page, width: int) -> None:
    """No sideways scrolling; every key's status and buttons inside the window."""
    scroll = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert scroll[0] <= scroll[1] == width, scroll
    table = page.evaluate(
        "(() => { const box = document.querySelector('#keys').parentElement;"
        " return [box.scrollWidth, box.clientWidth]; })()"
    )
    assert table[0] <= table[1], table  # not even inside the card
    rows = page.locator("#keys tbody tr[data-key-id]")
    assert rows.count() > 0
    for index in range(rows.count()):
        row = rows.nth(index)
        targets = [row.locator("td.status")]
        if row.get_by_role("button", name="Rotate").count():
            targets += [row.get_by_role("button", name=n) for n in ("Rotate", "Revoke")]
        for target in targets:
            target.scroll_into_view_if_needed()
            box = target.bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= width, (index, box)


def _assert_tidy(page) -> None:
    # Dates, key prefixes and short statuses on one line.
    lines = page.evaluate(
        """[...document.querySelectorAll('#keys td.date, #keys td.mono, #keys td.status')]
           .map((td) => {
             const range = document.createRange(); range.selectNodeContents(td);
             return [td.textContent, range.getClientRects().length]; })"""
    )
    assert lines and all(count == 1 for _, count in lines), lines
    # The checkbox at its size, right beside its words.
    box = page.locator("#create-form input[name=can_create]").bounding_box()
    words = page.locator("#create-form label.check span").bounding_box()
    assert box["width"] >= 15 and box["height"] >= 15, box
    assert 0 <= words["x"] - (box["x"] + box["width"]) <= 16, (box, words)
    # Every placeholder fits its field.
    cut = page.evaluate(
        """[...document.querySelectorAll('#create-form input[placeholder]')]
             .filter((input) => input.offsetParent !== null).map((input) => {
               const style = getComputedStyle(input);
               const context = document.createElement('canvas').getContext('2d');
               context.font = style.font;
               const room = input.clientWidth - parseFloat(style.paddingLeft)
                 - parseFloat(style.paddingRight);
               return [input.name, context.measureText(input.placeholder).width, room]; })
             .filter(([, needed, room]) => needed > room)"""
    )
    assert cut == [], cut


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1280px", "390px"])
def test_the_page_fits_desktop_and_phone_widths(server, chromium, tmp_path, viewport):
    username, key, _ = _user(server, "layout")
    _create(server, key, name="laptop", expires_in_days=90)
    _create(
        server,
        key,
        name="ci-train",
        allowed_ips=["10.0.0.0/8"],
        rate_limit="1000/hour",
        experiments=["ci-training"],
        registered_models=["ci-*"],
        expires_in_days=3,
    )
    server.get(KEYS.replace("api-keys", "whoami"), key)  # a "last used"
    context, page, errors = _open(chromium, server, username, key, viewport=viewport)
    try:
        _assert_fits(page, viewport["width"])
        _assert_tidy(page)
        expect(page.locator("#keys-pager")).to_be_hidden()  # three keys: one page
        setup = next(k for k in _keys_of(server, username) if k["name"] == "setup")
        expect(_row(page, setup["id"])).to_contain_text("unlimited")  # its rate limit
        expect(page.locator("#keys tbody tr", has_text="ci-train")).to_contain_text("1000/hour")
        if viewport == PHONE:
            screenshot(page, tmp_path, "key-page-phone.png")
        else:
            screenshot(page, tmp_path, "key-page-limits.png")
        assert errors == []
    finally:
        context.close()


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1280px", "390px"])
def test_an_admins_key_list_is_paged(server, chromium, tmp_path, viewport):
    username, key, _ = _user(server, "many")
    for number in range(44):
        _create(server, server.admin_key, username=username, name=f"job-{number:02d}")
    total = len(_keys_of(server, username))
    assert total == 45
    size = 20 if viewport == DESKTOP else 10
    context, page, errors = _open(chromium, server, "admin", server.admin_key, viewport=viewport)
    try:
        rows = page.locator("#keys tbody tr[data-key-id]")
        expect(rows).to_have_count(size)  # everyone's keys, one page of them
        expect(page.locator("#keys-pager")).to_be_visible()
        page.locator("#filter-form").get_by_label("User").fill(username)
        page.locator("#filter-form").get_by_role("button", name="Show").click()
        pager = page.locator("#keys-page")
        expect(pager).to_have_text(f"Keys 1–{size} of {total}")
        expect(page.get_by_role("button", name="Previous")).to_be_disabled()
        _assert_fits(page, viewport["width"])
        seen = set()
        for _ in range(-(-total // size)):
            expect(rows.first).to_be_visible()
            seen |= {rows.nth(i).get_attribute("data-key-id") for i in range(rows.count())}
            if len(seen) < total:
                page.get_by_role("button", name="Next").click()
        assert len(seen) == total
        expect(page.get_by_role("button", name="Next")).to_be_disabled()
        expect(pager).to_have_text(f"Keys {total - (total - 1) % size}–{total} of {total}")
        # A revocation on a later page leaves the list on that page.
        page.once("dialog", lambda dialog: dialog.accept())
        rows.first.get_by_role("button", name="Revoke").click()
        expect(rows.first).to_contain_text("revoked")
        expect(page.get_by_role("button", name="Next")).to_be_disabled()
        page.get_by_role("button", name="Previous").click()
        expect(pager).to_contain_text(f"Keys {total - (total - 1) % size - size}–")
        height = page.locator("#keys").bounding_box()["height"]
        assert height < (2200 if viewport == DESKTOP else 4500), height  # a page, not 45 keys
        if viewport == DESKTOP:
            audit = page.locator("#audit-form")
            audit.get_by_label("User").fill(username)
            audit.get_by_label("Event").select_option("revoked")
            audit.get_by_role("button", name="Show").click()
            expect(page.locator("#audit tbody tr")).to_have_count(1)
            screenshot(page, tmp_path, "key-page-admin.png")
        assert errors == []
    finally:
        context.close()


def test_a_limited_key_sees_what_it_cannot_do_disabled(server, chromium):
    username, key, key_id = _user(server, "limited-page")
    limited = _create(server, server.admin_key, username=username, experiments=["only-this"])
    context, page, errors = _open(chromium, server, username, limited["key"])
    try:
        expect(page.locator("#cannot-change")).to_contain_text("limited to some experiments")
        expect(page.get_by_role("button", name="Create key")).to_be_disabled()
        expect(_row(page, key_id).get_by_role("button", name="Revoke")).to_be_disabled()
        assert errors == []
    finally:
        context.close()


def test_the_create_form_does_nothing_before_the_script_is_ready(server, chromium):
    """Until the script has signed in, the form is disabled: a click on "Create key" neither
    submits a plain GET (reloading the page with the typed values in its URL) nor creates."""
    username, key, _ = _user(server, "early")
    before = len(_keys_of(server, username))
    context = signed_in(chromium, username, key, viewport=DESKTOP)
    try:
        page = context.new_page()
        page.route("**/hokusai/keys.js", lambda route: route.abort())  # the script never comes
        page.goto(f"{server.url}/hokusai/keys")
        expect(page.get_by_role("button", name="Create key")).to_be_disabled()
        expect(page.get_by_label("Name")).to_be_disabled()
        page.get_by_role("button", name="Create key").click(force=True)
        time.sleep(1)
        assert page.url == f"{server.url}/hokusai/keys"
        assert "/hokusai/keys?" not in server.log_text()
        page.unroute("**/hokusai/keys.js")
        page.reload()
        expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=30_000)
        expect(page.get_by_role("button", name="Create key")).to_be_enabled()
        page.get_by_label("Name").fill("once ready")
        page.get_by_role("button", name="Create key").click()
        expect(page.locator("#new-key")).to_be_visible()
        assert len(_keys_of(server, username)) == before + 1
        assert page.url == f"{server.url}/hokusai/keys"
    finally:
        context.close()


def test_an_expiry_under_a_day_is_shown_in_minutes_or_hours(server, chromium, tmp_path):
    """A federated key lives minutes: "expires in 15 min", not "in 1 d". The list the page
    gets is given expiries 15 minutes, 5 hours and 3 days away (and called expiring)."""
    username, key, _ = _user(server, "soon")
    _create(server, key, name="second")
    _create(server, key, name="third")
    now = datetime.now(timezone.utc)
    soon = [timedelta(minutes=14, seconds=30), timedelta(hours=4.5), timedelta(days=2.5)]

    def answer(route):
        response = route.fetch()
        body = response.json()
        for record, delta in zip(body["api_keys"], soon, strict=True):
            record["expires_at"] = (now + delta).isoformat(timespec="seconds")
            record["expiring"] = True
        route.fulfill(response=response, json=body)

    context = signed_in(chromium, username, key, viewport=DESKTOP)
    try:
        page = context.new_page()
        page.route("**/api-keys/list*", answer)
        page.goto(f"{server.url}/hokusai/keys")
        expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=30_000)
        statuses = page.locator("#keys tbody td.status")
        expect(statuses).to_have_text(
            ["expires in 15 min", "expires in 5 h", "expires in 3 d"], timeout=10_000
        )
    finally:
        context.close()


def _use_from(server, key: str, source: str) -> None:
    reply = send(server.url, "GET", WHOAMI, [("Authorization", f"Bearer {key}")], source=source)
    assert reply.status == 200, reply.text


def _recorded(server, username: str, key_id: str, count: int) -> None:
    """Wait until the server has recorded ``count`` addresses for the key (each worker writes
    them in the background)."""
    deadline = time.monotonic() + 30
    while True:
        key = next(k for k in _keys_of(server, username) if k["id"] == key_id)
        if len(key["addresses"]) >= count:
            return
        assert time.monotonic() < deadline, key
        time.sleep(0.1)


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1280px", "390px"])
def test_each_key_shows_its_expiry_warning_and_where_it_was_used_from(
    server, chromium, tmp_path, viewport
):
    """Real keys: one expiring in 3 days, one made to expire in 3 hours (its expiry moved in
    the database, as a federated key's would be), one for 90 days (no warning). The owner
    sees where the 3-day key was used from (127.0.0.1 and 127.0.0.2), folded under its last
    use, and the page still fits."""
    username, key, _ = _user(server, "seen-page")
    days = _create(server, key, name="ci", expires_in_days=3)
    hours = _create(server, key, name="hourly", expires_in_days=1)["api_key"]["id"]
    later = _create(server, key, name="later", expires_in_days=90)["api_key"]["id"]
    with get_engine(server.database_uri).begin() as conn:
        conn.execute(
            sa.update(ApiKey)
            .where(ApiKey.id == hours)
            .values(expires_at=utcnow() + timedelta(hours=3))
        )
    deploy = days["api_key"]["id"]
    _use_from(server, days["key"], "127.0.0.2")
    _use_from(server, days["key"], "127.0.0.1")
    _recorded(server, username, deploy, 2)
    context, page, errors = _open(chromium, server, username, key, viewport=viewport)
    try:
        expect(_row(page, deploy).locator("td.status")).to_have_text("expires in 3 d")
        expect(_row(page, hours).locator("td.status")).to_have_text("expires in 3 h")
        expect(_row(page, later).locator("td.status")).to_have_text("active")
        used = _row(page, deploy).locator("td.last-used")
        expect(used.locator("summary")).to_have_text("2 addresses")
        expect(used.locator(".addresses li")).to_have_count(2)
        expect(used.locator(".addresses li").first).to_be_hidden()  # folded until asked
        used.locator("summary").click()
        addresses = used.locator(".addresses .address")
        expect(addresses).to_have_count(2)
        assert sorted(addresses.all_inner_texts()) == ["127.0.0.1", "127.0.0.2"]
        expect(used.locator(".addresses time").first).to_have_text(
            re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d$")
        )
        expect(_row(page, later).locator("td.last-used summary")).to_have_count(0)  # unused
        _assert_fits(page, viewport["width"])
        _assert_tidy(page)
        used.scroll_into_view_if_needed()
        name = "key-page-addresses-phone.png" if viewport == PHONE else "key-page-addresses.png"
        screenshot(page, tmp_path, name)
        assert errors == []
    finally:
        context.close()
