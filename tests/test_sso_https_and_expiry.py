"""Sign-in over HTTPS (uvicorn with a self-signed certificate, tests/tls.py): the session
cookie is ``Secure`` there; and a session's idle timeout and lifetime as the server enforces
them, end to end (``session_idle_timeout`` 60 s, ``session_lifetime`` 80 s: the idle timeout is
the smallest the settings allow, so this module waits about a minute and a half)."""

from __future__ import annotations

import time

import pytest
import requests

from tests.oidc_provider import sign_in
from tests.server import Server
from tests.test_sso import CLIENT, SECRET, WHOAMI, provider_for, session_cookie

IDLE, LIFETIME = 60, 80


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    server = Server(str(tmp_path_factory.mktemp("sso-https")), workers=1, tls=True)
    provider = provider_for(server).start()
    server.extra_env = {
        "HOKUSAI_OIDC_ISSUER": provider.issuer,
        "HOKUSAI_OIDC_CLIENT_ID": CLIENT,
        "HOKUSAI_OIDC_CLIENT_SECRET": SECRET,
        "HOKUSAI_SESSION_IDLE_TIMEOUT": f"{IDLE}s",
        "HOKUSAI_SESSION_LIFETIME": f"{LIFETIME}s",
    }
    try:
        server.start()
        yield server
    finally:
        server.stop()
        provider.destroy()


def _signed_in(server: Server, username: str):
    """A browser trusting the server's certificate, signed in; (browser, callback answer,
    the time just before the sign-in began)."""
    browser = requests.Session()
    browser.verify = server.verify
    browser.trust_env = False  # else REQUESTS_CA_BUNDLE (if set) overrides ``verify``
    began = time.monotonic()
    to_provider = browser.get(f"{server.url}/hokusai/login", allow_redirects=False, timeout=30)
    assert to_provider.status_code == 302, to_provider.text
    assert to_provider.headers["Location"].startswith("http://127.0.0.1:")  # the provider
    callback = sign_in(browser, to_provider.headers["Location"], username)
    assert callback.startswith(f"{server.url}/hokusai/auth/callback?"), callback
    return browser, browser.get(callback, allow_redirects=False, timeout=30), began


def _whoami(server: Server, browser: requests.Session) -> requests.Response:
    return browser.get(f"{server.url}{WHOAMI}", timeout=30)


def _until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


def test_over_https_the_session_cookie_is_secure_and_works(setup):
    server = setup
    browser, answer, _ = _signed_in(server, "bob")
    assert answer.status_code == 303, answer.text
    cookie = session_cookie(answer)
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    me = _whoami(server, browser)
    assert me.status_code == 200 and me.json()["username"] == "bob", me.text
    # Nothing sends a Secure cookie over plain HTTP: the same session by hand over HTTP is
    # impossible here (the server speaks TLS only), so check the browser's jar would not.
    jar_cookie = next(c for c in browser.cookies if c.name == "hokusai_session")
    assert jar_cookie.secure


def test_a_session_ends_when_idle_and_at_its_lifetime(setup):
    """``busy`` is used every 10 s and outlives the idle timeout, then ends at its lifetime;
    ``idle`` is not used after sign-in and ends after the idle timeout. Margins of several
    seconds either side of each bound (the server decides with its own clock; a busy machine
    delays requests, which only moves them later)."""
    server = setup
    busy, answer, busy_began = _signed_in(server, "erin")
    assert answer.status_code == 303, answer.text
    idle, answer, idle_began = _signed_in(server, "frank")
    assert answer.status_code == 303, answer.text
    idle_signed_in = time.monotonic()
    # Used until the idle timeout has long passed for a session left alone.
    while time.monotonic() < idle_signed_in + IDLE + 5:
        assert _whoami(server, busy).status_code == 200
        time.sleep(10)
    ended = _whoami(server, idle)
    assert ended.status_code == 401 and "unused for too long" in ended.json()["message"]
    # Still within its lifetime (it began at most ~IDLE + 15 s ago): accepted.
    assert time.monotonic() < busy_began + LIFETIME - 5, "the machine is too slow for this test"
    assert _whoami(server, busy).status_code == 200
    secret = busy.cookies["hokusai_session"]
    _until(busy_began + LIFETIME + 5)
    # A browser drops the cookie at its Max-Age (the lifetime): the server must refuse the
    # session itself too, so send it by hand.
    ended = requests.get(
        f"{server.url}{WHOAMI}",
        cookies={"hokusai_session": secret},
        verify=server.verify,
        timeout=30,
    )
    assert ended.status_code == 401 and "reached its lifetime" in ended.json()["message"]
    assert idle_began < idle_signed_in
