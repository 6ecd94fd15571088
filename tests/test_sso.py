"""Sign-in with a real, certified OpenID provider (npm ``oidc-provider``, tests/oidc_provider.py)
against a real ``mlflow server --app-name hokusai`` with 2 workers: sessions as a browser
uses them (plain HTTP with a cookie jar), keys made from a session used by the stock client,
sign-out, revocation on every worker, groups, and the refusals."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from urllib.parse import parse_qs, urlsplit

import mlflow
import pytest
import requests
from mlflow.utils.workspace_utils import DEFAULT_WORKSPACE_NAME

from mlflow_hokusai import _mlflow
from tests.oidc_provider import OidcClient, OidcProvider, OidcUser, sign_in
from tests.server import Server, clean_env

CLIENT = "hokusai-sso"
SECRET = "sso-test-secret"
USERS = [
    OidcUser("alice", groups=["ml-admins", "ml-readers"]),
    OidcUser("bob", groups=["ml-readers"]),
    OidcUser("carol"),  # in no group: not allowed to sign in
    OidcUser("dave", groups=["ml-readers"]),
    OidcUser("erin", groups=["ml-readers", "ml-trainers"]),
    OidcUser("frank", groups=["ml-readers"]),
]
# After the groups changed at the provider: alice leaves ml-admins, bob joins it, dave loses
# every group, erin leaves ml-trainers.
MOVED = [
    OidcUser("alice", groups=["ml-readers"]),
    OidcUser("bob", groups=["ml-readers", "ml-admins"]),
    OidcUser("dave"),
    OidcUser("erin", groups=["ml-readers"]),
]
HTML = {"Accept": "text/html,application/xhtml+xml"}
WHOAMI = "/ajax-api/2.0/mlflow/hokusai/whoami"


def provider_for(server: Server, users=USERS, port: int = 0) -> OidcProvider:
    bases = (server.url, f"{server.url}/api/mlflow")
    client = OidcClient(
        CLIENT,
        SECRET,
        redirect_uris=[f"{b}/hokusai/auth/callback" for b in bases],
        post_logout_redirect_uris=[f"{b}/hokusai/logout" for b in bases],
    )
    return OidcProvider([client], users, port=port)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    server = Server(str(tmp_path_factory.mktemp("sso")), workers=2)
    provider = provider_for(server).start()
    server.extra_env = {
        "HOKUSAI_OIDC_ISSUER": provider.issuer,
        "HOKUSAI_OIDC_CLIENT_ID": CLIENT,
        "HOKUSAI_OIDC_CLIENT_SECRET": SECRET,
        "HOKUSAI_OIDC_SCOPES": "openid profile email groups",
        "HOKUSAI_OIDC_ALLOWED_GROUPS": "ml-readers, ml-admins",
        "HOKUSAI_OIDC_ADMIN_GROUPS": "ml-admins",
        "HOKUSAI_OIDC_GROUP_ROLES": "ml-trainers:trainers",
    }
    try:
        server.start()
        yield server, provider
    finally:
        server.stop()
        provider.destroy()


def start(server: Server, browser: requests.Session, base: str = "", **params):
    return browser.get(
        f"{server.url}{base}/hokusai/login", params=params, allow_redirects=False, timeout=30
    )


def signed_in(server: Server, username: str, base: str = "", next_path: str | None = None):
    """A browser (a cookie jar) signed in as ``username``, and the callback's answer."""
    browser = requests.Session()
    params = {"next": next_path} if next_path else {}
    to_provider = start(server, browser, base, **params)
    assert to_provider.status_code == 302, to_provider.text
    callback = sign_in(browser, to_provider.headers["Location"], username)
    answer = browser.get(callback, allow_redirects=False, timeout=30)
    return browser, answer


def whoami(server: Server, browser: requests.Session, base: str = "") -> requests.Response:
    return browser.get(f"{server.url}{base}{WHOAMI}", timeout=30)


def session_cookie(answer: requests.Response) -> str:
    return next(h for h in answer.raw.headers.getlist("Set-Cookie") if "hokusai_session=" in h)


def test_sign_in_then_the_ui_and_whoami_as_the_user(setup):
    server, provider = setup
    browser, answer = signed_in(server, "bob", next_path="/#/experiments")
    assert answer.status_code == 303, answer.text
    assert answer.headers["Location"] == "/#/experiments"
    cookie = session_cookie(answer)
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain HTTP here; HTTPS gets Secure
    me = whoami(server, browser)
    assert me.status_code == 200, me.text
    assert me.json()["username"] == "bob" and me.json()["is_admin"] is False
    assert me.json()["key_id"] is None and me.json()["session_id"]
    ui = browser.get(f"{server.url}/", headers=HTML, timeout=30)
    assert ui.status_code == 200 and "<html" in ui.text.lower()
    experiments = browser.get(
        f"{server.url}/ajax-api/2.0/mlflow/experiments/search", params={"max_results": 5}
    )
    assert experiments.status_code == 200, experiments.text
    events = server.cli("audit", "list", "--event", "signed-in", "--user", "bob").stdout
    assert "bob" in events and "session " in events


def test_without_a_session_a_browser_is_sent_to_sign_in_and_an_api_client_gets_401(setup):
    server, _ = setup
    page = requests.get(f"{server.url}/", headers=HTML, allow_redirects=False, timeout=30)
    assert page.status_code == 302
    assert page.headers["Location"] == "/hokusai/login?next=/"
    keys_page = requests.get(
        f"{server.url}/api/mlflow/hokusai/keys", headers=HTML, allow_redirects=False, timeout=30
    )
    assert (
        keys_page.headers["Location"] == "/api/mlflow/hokusai/login?next=/api/mlflow/hokusai/keys"
    )
    api = requests.get(f"{server.url}{WHOAMI}", timeout=30)
    assert api.status_code == 401 and api.json()["error_code"] == "UNAUTHENTICATED"
    with_key = requests.get(
        f"{server.url}/", headers={**HTML, "Authorization": "Bearer nope"}, timeout=30
    )
    assert with_key.status_code == 401


def test_a_key_made_from_a_session_works_with_the_stock_client(setup, monkeypatch):
    server, _ = setup
    browser, _ = signed_in(server, "dave")
    made = browser.post(
        f"{server.url}/ajax-api/2.0/mlflow/hokusai/api-keys/create",
        json={"name": "laptop"},
        headers={"Origin": server.url, "Sec-Fetch-Site": "same-origin"},
        timeout=30,
    )
    assert made.status_code == 200, made.text
    key = made.json()["key"]
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", key)
    client = mlflow.MlflowClient(server.url)
    experiment_id = client.create_experiment("made-with-a-session-key")
    assert client.get_experiment(experiment_id).name == "made-with-a-session-key"
    created = server.cli("audit", "list", "--event", "created", "--user", "dave").stdout
    assert "via session" in created


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://127.0.0.1:1", "Sec-Fetch-Site": "same-site"},  # another local port
        {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
        {"Origin": "http://localhost:3000"},
        {"Origin": "null"},
        {},  # no Origin at all
    ],
)
def test_a_cross_site_write_with_the_cookie_is_refused(setup, headers):
    server, _ = setup
    browser, _ = signed_in(server, "bob")
    before = browser.get(f"{server.url}/ajax-api/2.0/mlflow/hokusai/api-keys/list").json()
    refused = browser.post(
        f"{server.url}/ajax-api/2.0/mlflow/hokusai/api-keys/create",
        json={"name": "stolen"},
        headers=headers,
        timeout=30,
    )
    assert refused.status_code == 403, refused.text
    assert "own pages" in refused.json()["message"]
    form = browser.post(
        f"{server.url}/ajax-api/2.0/mlflow/experiments/create",
        data={"name": "cross-site"},
        headers=headers,
        timeout=30,
    )
    assert form.status_code == 403
    after = browser.get(f"{server.url}/ajax-api/2.0/mlflow/hokusai/api-keys/list").json()
    assert after == before


def test_sign_out_from_another_site_is_refused(setup):
    server, _ = setup
    browser, _ = signed_in(server, "bob")
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "http://evil.example"}):
        refused = browser.post(f"{server.url}/hokusai/logout", headers=headers, timeout=30)
        assert refused.status_code == 403 and "own pages" in refused.text
    assert whoami(server, browser).status_code == 200


def test_sign_out_ends_the_session_and_the_providers(setup):
    server, provider = setup
    browser, answer = signed_in(server, "bob")
    secret = browser.cookies["hokusai_session"]
    out = browser.get(
        f"{server.url}/hokusai/logout",
        headers={"Sec-Fetch-Site": "same-origin"},
        allow_redirects=False,
        timeout=30,
    )
    assert out.status_code == 303
    location = urlsplit(out.headers["Location"])
    assert (
        f"{location.scheme}://{location.netloc}{location.path}"
        == (provider.discovery["end_session_endpoint"])
    )
    query = parse_qs(location.query)
    assert query["client_id"] == [CLIENT]
    assert query["post_logout_redirect_uri"] == [f"{server.url}/hokusai/logout"]
    refused = whoami(server, browser)
    assert refused.status_code == 401 and "WWW-Authenticate" not in refused.headers
    kept = requests.get(f"{server.url}{WHOAMI}", cookies={"hokusai_session": secret}, timeout=30)
    assert kept.status_code == 401 and "has ended" in kept.json()["message"]
    landing = browser.get(f"{server.url}/hokusai/logout", timeout=30)
    assert landing.status_code == 200 and "signed out" in landing.text


def test_an_admin_revokes_a_session_and_every_worker_refuses_it_within_a_second(setup):
    server, _ = setup
    browser, _ = signed_in(server, "dave")
    assert all(whoami(server, browser).status_code == 200 for _ in range(6))  # both workers
    listed = server.cli("sessions", "list", "--user", "dave", "--format", "json").stdout
    assert '"dave"' in listed
    server.cli("sessions", "revoke", "--user", "dave")
    time.sleep(1.1)  # the design's bound: every worker's cache entry is at most 1 s old
    answers = [whoami(server, browser).status_code for _ in range(10)]
    assert answers == [401] * 10
    page = browser.get(f"{server.url}/", headers=HTML, allow_redirects=False, timeout=30)
    assert page.status_code == 302 and "/hokusai/login" in page.headers["Location"]
    revoked = server.cli("audit", "list", "--event", "session-revoked").stdout
    assert "dave" in revoked


SESSIONS = "/api/2.0/mlflow/hokusai/sessions"


def test_sessions_over_rest_own_and_by_an_admin(setup):
    server, _ = setup
    first, _ = signed_in(server, "erin")
    second, _ = signed_in(server, "erin")
    mine = first.get(f"{server.url}/ajax-api/2.0/mlflow/hokusai/sessions/list", timeout=30)
    assert mine.status_code == 200, mine.text
    listed = mine.json()["sessions"]
    assert {s["username"] for s in listed} == {"erin"} and len(listed) >= 2
    assert sum(s["current"] for s in listed) == 1
    others = first.get(
        f"{server.url}/ajax-api/2.0/mlflow/hokusai/sessions/list",
        params={"username": "alice"},
        timeout=30,
    )
    assert others.status_code == 403
    everything = server.get(f"{SESSIONS}/list", server.admin_key, params={"username": "erin"})
    assert {s["id"] for s in everything.json()["sessions"]} >= {s["id"] for s in listed}

    bad = server.post(f"{SESSIONS}/revoke", server.admin_key, json={})
    assert bad.status_code == 400 and "exactly one" in bad.json()["message"]
    revoked = server.post(f"{SESSIONS}/revoke", server.admin_key, json={"username": "erin"})
    assert revoked.status_code == 200 and len(revoked.json()["revoked"]) >= 2
    time.sleep(1.1)
    assert whoami(server, first).status_code == 401
    assert whoami(server, second).status_code == 401


def _online(server: Server, key: str, *args: str):
    return subprocess.run(
        [sys.executable, "-m", "mlflow_hokusai.cli", "sessions", *args]
        + ["--tracking-uri", server.url],
        env=clean_env(HOKUSAI_API_KEY=key),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=server.workdir,
    )


def test_the_cli_online_lists_and_revokes_with_the_keys_rights(setup):
    server, _ = setup
    browser, _ = signed_in(server, "bob")
    mine = whoami(server, browser).json()["session_id"]
    bob_key = server.create_key("bob")
    listed = _online(server, bob_key, "list", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    assert mine in {s["id"] for s in json.loads(listed.stdout)}
    assert {s["username"] for s in json.loads(listed.stdout)} == {"bob"}
    refused = _online(server, bob_key, "revoke", "--user", "erin")
    assert refused.returncode != 0 and "Only admins" in refused.stderr
    assert "Traceback" not in refused.stderr

    done = _online(server, server.admin_key, "revoke", mine)
    assert done.returncode == 0, done.stderr
    assert f"Revoked session {mine}." in done.stderr
    ended = _online(server, server.admin_key, "list", "--user", "bob", "--all", "--format", "json")
    assert ended.returncode == 0, ended.stderr
    assert {s["id"]: s["status"] for s in json.loads(ended.stdout)}[mine] == "revoked"
    live = _online(server, server.admin_key, "list", "--user", "bob", "--format", "json")
    assert mine not in {s["id"] for s in json.loads(live.stdout)}
    time.sleep(1.1)
    assert whoami(server, browser).status_code == 401


def test_sign_out_everywhere_from_a_session(setup):
    server, _ = setup
    here, _ = signed_in(server, "erin")
    there, _ = signed_in(server, "erin")
    done = here.post(
        f"{server.url}/ajax-api/2.0/mlflow/hokusai/sessions/revoke",
        json={"username": "erin"},
        headers={"Origin": server.url},
        timeout=30,
    )
    assert done.status_code == 200, done.text
    time.sleep(1.1)
    assert whoami(server, there).status_code == 401


def test_deleting_the_user_ends_their_sessions_on_every_worker(setup):
    server, _ = setup
    browser, _ = signed_in(server, "frank")
    assert whoami(server, browser).status_code == 200
    deleted = requests.delete(
        f"{server.url}/api/2.0/mlflow/users/delete",
        json={"username": "frank"},
        headers={"Authorization": f"Bearer {server.admin_key}"},
        timeout=30,
    )
    assert deleted.status_code == 200, deleted.text
    time.sleep(1.1)
    answers = [whoami(server, browser) for _ in range(6)]
    assert {a.status_code for a in answers} == {401}
    assert "no longer exists" in answers[0].json()["message"]


def test_admin_status_follows_the_admin_groups(setup):
    server, _ = setup
    browser, _ = signed_in(server, "alice")
    assert whoami(server, browser).json()["is_admin"] is True
    # bob made an admin by hand is demoted at his next sign-in (not in ml-admins)
    server.cli("keys", "create", "--user", "bob", "--admin")
    browser, _ = signed_in(server, "bob")
    assert whoami(server, browser).json()["is_admin"] is False
    changed = server.cli("audit", "list", "--event", "roles-changed", "--user", "bob").stdout
    assert "by group at sign-in: no longer an admin" in changed


def test_a_person_outside_the_allowed_groups_is_refused_with_a_reason(setup):
    server, _ = setup
    _, answer = signed_in(server, "carol")
    assert answer.status_code == 403, answer.text
    assert "text/html" in answer.headers["Content-Type"]
    assert "none of the groups allowed" in answer.text
    assert "hokusai_session" not in answer.headers.get("Set-Cookie", "")
    refused = server.cli("audit", "list", "--event", "sign-in-refused").stdout
    assert "not-in-allowed-groups" in refused


@pytest.mark.parametrize(
    "next_path",
    ["https://evil.example/", "//evil.example/x", "/\\evil.example", "evil", "/x\r\nSet-Cookie:"],
)
def test_an_open_redirect_in_next_is_refused(setup, next_path):
    server, _ = setup
    answer = start(server, requests.Session(), next=next_path)
    assert answer.status_code == 400
    assert "must be a path on this server" in answer.text


def test_a_replayed_or_foreign_state_is_refused(setup):
    server, _ = setup
    browser = requests.Session()
    to_provider = start(server, browser)
    callback = sign_in(browser, to_provider.headers["Location"], "bob")
    # the callback opened in another browser (a login CSRF): its state is not bound there
    other = requests.get(callback, allow_redirects=False, timeout=30)
    assert other.status_code == 400 and "not started in this browser" in other.text
    first = browser.get(callback, allow_redirects=False, timeout=30)
    assert first.status_code == 303
    # the same answer again, state cookie put back: the sign-in was used already
    replay = requests.get(
        callback,
        cookies={"hokusai_sign_in": parse_qs(urlsplit(callback).query)["state"][0]},
        allow_redirects=False,
        timeout=30,
    )
    assert replay.status_code == 400 and "already used" in replay.text
    state = parse_qs(urlsplit(callback).query)["state"][0]
    code = parse_qs(urlsplit(callback).query)["code"][0]
    log = server.log_text()
    assert "callback?code=[redacted]&state=[redacted]" in log
    assert state not in log and code not in log


def test_sign_in_under_the_url_prefix(setup):
    server, _ = setup
    browser, answer = signed_in(server, "bob", base="/api/mlflow")
    assert answer.status_code == 303
    assert answer.headers["Location"] == "/api/mlflow/"
    assert "Path=/api/mlflow" in session_cookie(answer)
    me = whoami(server, browser, "/api/mlflow")
    assert me.status_code == 200 and me.json()["username"] == "bob"
    assert whoami(server, browser).status_code == 401  # the cookie is the prefix's only


def test_groups_changed_at_the_provider_apply_at_the_next_sign_in(setup):
    """Admin status, MLflow roles by group and the allowed groups follow the provider's groups
    at each sign-in. (Last in this module: it restarts the provider with other groups.)"""
    server, provider = setup
    users = _mlflow.user_store(server.database_uri)
    trainers = users.create_role("trainers", DEFAULT_WORKSPACE_NAME)
    signed_in(server, "erin")
    erin = users.get_user("erin")
    assert [r.name for r in users.list_user_roles(erin.id)] == ["trainers"]
    daves, _ = signed_in(server, "dave")
    assert whoami(server, daves).status_code == 200
    assert whoami(server, signed_in(server, "alice")[0]).json()["is_admin"] is True

    port = provider.port
    provider.stop()
    moved = provider_for(server, MOVED, port=port).start()
    try:
        time.sleep(5)  # the server fetches a new signing key at most every 5 s
        assert whoami(server, signed_in(server, "alice")[0]).json()["is_admin"] is False
        assert whoami(server, signed_in(server, "bob")[0]).json()["is_admin"] is True
        signed_in(server, "erin")
        assert users.list_user_roles(erin.id) == []
        _, refused = signed_in(server, "dave")
        assert refused.status_code == 403 and "none of the groups allowed" in refused.text
        time.sleep(1.1)
        assert whoami(server, daves).status_code == 401  # his earlier session ended too
        assert trainers.id not in {r.id for r in users.list_user_roles(erin.id)}
        changes = server.cli("audit", "list", "--event", "roles-changed", "--format", "json")
        details = {(e["username"], e["detail"]) for e in json.loads(changes.stdout)}
        assert ("erin", "by group at sign-in: role 'trainers' assigned") in details
        assert ("erin", "by group at sign-in: role 'trainers' removed") in details
        assert ("alice", "by group at sign-in: no longer an admin") in details
        assert ("bob", "by group at sign-in: made an admin") in details
    finally:
        moved.destroy()
        provider.start()
