"""The MLflow UI in headless Chromium (Playwright, tests/browser.py), at ``/`` and under the
prefix, with a key as the Basic-auth password, showing an experiment created through the REST
API."""

import pytest

from tests.browser import signed_in

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser_user(server):
    key = server.create_key("browser-user")
    name = "browser-visible-experiment"
    created = server.post("/api/2.0/mlflow/experiments/create", key, json={"name": name})
    assert created.status_code == 200, created.text
    return key, name


@pytest.mark.parametrize("prefix", ["", "/api/mlflow"])
def test_ui_shows_an_experiment_with_a_key_as_basic_password(
    server, browser_user, chromium, prefix, tmp_path
):
    key, name = browser_user
    context = signed_in(chromium, "browser-user", key)
    try:
        page = context.new_page()
        page.goto(f"{server.url}{prefix}/#/experiments")
        shot = tmp_path / f"ui{prefix.replace('/', '-') or '-root'}.png"
        try:
            page.get_by_text(name).first.wait_for(timeout=90_000)
        finally:
            page.screenshot(path=str(shot))
        assert page.url.startswith(f"{server.url}{prefix}/"), page.url
    finally:
        context.close()
