"""The pure parts of sign-in, without a server: the ID token checks (signature, iss, aud, exp,
nonce) on tokens signed here, ``next`` (no open redirect), the claims, the session cookie's
parsing, the same-origin rule, and the gate's session decisions (``decide`` in-process)."""

from __future__ import annotations

import time
import warnings

import flask
import pytest

from mlflow_hokusai import _mlflow
from mlflow_hokusai.auth.authenticator import AuthFailure, Identity
from mlflow_hokusai.auth.credentials import from_headers
from mlflow_hokusai.auth.origins import session_write_refusal
from mlflow_hokusai.auth.scopes import ReadScope
from mlflow_hokusai.auth.sign_in import Refused, check_id_token, local_next, person_from_claims
from mlflow_hokusai.config import Settings
from mlflow_hokusai.gate.decision import Authenticate, Gatekeeper, Request
from mlflow_hokusai.routes.services import Services

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from authlib.jose import JsonWebKey, jwt

ISSUER, CLIENT, NONCE = "https://login.example.com", "mlflow", "n-123"
SIGNING = JsonWebKey.generate_key("RSA", 2048, is_private=True, options={"kid": "k1"})
OTHER = JsonWebKey.generate_key("RSA", 2048, is_private=True, options={"kid": "k1"})
JWKS = {"keys": [SIGNING.as_dict(is_private=False)]}
SECRET = "A" * 43


def token(key=SIGNING, **claims) -> str:
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": CLIENT, "sub": "u1", "iat": now, "exp": now + 300}
    payload.update({"nonce": NONCE, **claims})
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode({"alg": "RS256", "kid": "k1"}, payload, key).decode()


def check(id_token: str) -> dict:
    return check_id_token(id_token, JWKS, issuer=ISSUER, client_id=CLIENT, nonce=NONCE)


def test_a_good_id_token_passes():
    assert check(token())["sub"] == "u1"


@pytest.mark.parametrize(
    "bad, says",
    [
        (lambda: token(key=OTHER), "bad_signature"),  # forged: another key, same kid
        (lambda: token(exp=int(time.time()) - 120), "expired"),
        (lambda: token(aud="someone-else"), "aud"),
        (lambda: token(iss="https://evil.example"), "iss"),
        (lambda: token(nonce="replayed"), "nonce"),
        (lambda: token(nonce=None), "nonce"),
        (lambda: token(aud=[CLIENT, "other"]), "azp"),
        (lambda: "not.a.token", "ID token"),
    ],
)
def test_a_bad_id_token_is_refused_saying_why(bad, says):
    with pytest.raises(Refused) as refused:
        check(bad())
    assert refused.value.reason == "bad-id-token"
    assert says in refused.value.message


def test_a_tampered_payload_is_refused():
    header, _, signature = token().split(".")
    _, payload, _ = token(sub="admin").split(".")
    with pytest.raises(Refused, match="bad_signature"):
        check(f"{header}.{payload}.{signature}")


@pytest.mark.parametrize(
    "value", ["https://evil.example/", "//evil.example", "/\\evil", "evil", "/a\nb", "/%0d"]
)
def test_next_must_be_a_local_path(value):
    if value == "/%0d":  # percent-encoded text is a plain path to the browser: allowed
        assert local_next(value, "") == value
        return
    with pytest.raises(Refused) as refused:
        local_next(value, "")
    assert refused.value.status == 400


def test_next_defaults_to_the_base():
    assert local_next(None, "/api/mlflow") == "/api/mlflow/"
    assert local_next("/#/experiments/1", "") == "/#/experiments/1"


def test_claims():
    settings = Settings(oidc_admin_groups=("ml-admins",))
    assert person_from_claims({"preferred_username": "al", "groups": ["g"]}, settings).username == (
        "al"
    )
    assert person_from_claims({"email": "al@x", "groups": []}, settings).username == "al@x"
    for claims, reason in (
        ({"groups": []}, "missing-claim"),
        ({"preferred_username": "al"}, "missing-claim"),  # groups needed for admin groups
        ({"preferred_username": "al", "groups": "g"}, "malformed-claim"),
        ({"preferred_username": ["al"], "groups": []}, "missing-claim"),
    ):
        with pytest.raises(Refused) as refused:
            person_from_claims(claims, settings)
        assert refused.value.reason == reason
    # without group rules, no groups claim is needed
    assert person_from_claims({"preferred_username": "al"}, Settings()).groups == ()


def headers_of(mapping):
    lowered = {k.lower(): v for k, v in mapping.items()}
    return lambda name: [lowered[name.lower()]] if name.lower() in lowered else []


def test_the_session_cookie_is_a_credential_only_without_a_key():
    cookie = {"Cookie": f"_session=provider; hokusai_session={SECRET}; other=1"}
    assert from_headers(headers_of(cookie)).kind == "session"
    assert from_headers(headers_of(cookie)).key == SECRET
    with_key = {**cookie, "Authorization": "Bearer hk_live_" + "B" * 40}
    assert from_headers(headers_of(with_key)).kind == "key"
    twice = {"Cookie": f"hokusai_session={SECRET}; hokusai_session={'C' * 43}"}
    assert from_headers(headers_of(twice)).kind == "malformed"
    assert from_headers(headers_of({"Cookie": "_session=provider"})).kind == "none"


def test_the_same_origin_rule():
    assert session_write_refusal("same-origin", None, "h:1") is None
    assert session_write_refusal("same-site", "http://h:2", "h:1") is not None
    assert session_write_refusal("cross-site", None, "h:1") is not None
    assert session_write_refusal(None, "http://h:1", "h:1") is None
    assert session_write_refusal(None, "http://localhost:3000", "h:1") is not None
    assert session_write_refusal(None, None, "h:1") is not None
    assert session_write_refusal(None, "null", "h:1") is not None


@pytest.fixture(scope="module")
def keeper() -> Gatekeeper:
    app = flask.Flask("routes")
    app.add_url_rule("/ajax-api/2.0/mlflow/runs/create", "create", methods=["POST"])
    app.add_url_rule("/ajax-api/2.0/mlflow/runs/get", "get", methods=["GET"])
    services = Services(
        settings=Settings(oidc_issuer=ISSUER),
        key_store=None,
        cache=None,
        authenticator=None,
        audit=None,
        keys=None,
        native_routes=_mlflow.NativeRoutes(),
        read_scope=ReadScope(app),
        static_prefix="",
        rate_limits=None,
    )
    return Gatekeeper(services)


def decide(keeper, path, method="GET", headers=None, answer=None, query=""):
    request = Request(method, path, path, headers_of(headers or {}), "127.0.0.1", query)
    steps = keeper.decide(request)
    try:
        step = next(steps)
    except StopIteration as stop:
        return None, stop.value
    try:
        steps.send(answer)
    except StopIteration as stop:
        return step, stop.value
    raise AssertionError("more steps than expected")


def test_sign_in_routes_are_public_and_keep_their_prefix(keeper):
    for path in ("/hokusai/login", "/api/mlflow/hokusai/auth/callback", "/hokusai/logout"):
        step, decision = decide(keeper, path)
        assert step is None and decision.response is None
        assert decision.path == path and decision.swap is None


def test_without_sign_in_the_sign_in_routes_are_protected():
    app = flask.Flask("routes")
    services = Services(
        settings=Settings(),
        key_store=None,
        cache=None,
        authenticator=None,
        audit=None,
        keys=None,
        native_routes=_mlflow.NativeRoutes(),
        read_scope=ReadScope(app),
        static_prefix="",
        rate_limits=None,
    )
    step, decision = decide(
        Gatekeeper(services), "/hokusai/login", answer=AuthFailure("", "missing")
    )
    assert isinstance(step, Authenticate) and decision.response[0] == 401
    assert ("WWW-Authenticate", 'Basic realm="mlflow-hokusai"') in decision.response[1]


def test_a_page_request_without_a_session_goes_to_sign_in(keeper):
    page = {"Accept": "text/html", "Sec-Fetch-Mode": "navigate"}
    missing = AuthFailure("no", "missing")
    _, decision = decide(keeper, "/api/mlflow/", headers=page, answer=missing, query="a=1")
    assert decision.response[0] == 302
    assert ("Location", "/api/mlflow/hokusai/login?next=/api/mlflow/%3Fa%3D1") in (
        decision.response[1]
    )
    # the UI's own calls and API clients get the 401, without a Basic challenge
    _, api = decide(keeper, "/ajax-api/2.0/mlflow/runs/get", headers={}, answer=missing)
    assert api.response[0] == 401
    assert not any(name == "WWW-Authenticate" for name, _ in api.response[1])


def test_a_session_write_from_another_origin_is_refused(keeper):
    session = Identity("alice", False, None, "write", session_id="s1")
    cookie = {"Cookie": f"hokusai_session={SECRET}", "Host": "127.0.0.1:5000"}
    path = "/ajax-api/2.0/mlflow/runs/create"
    step, refused = decide(
        keeper, path, "POST", {**cookie, "Origin": "http://localhost:3000"}, session
    )
    assert isinstance(step, Authenticate) and step.credential.kind == "session"
    assert refused.response[0] == 403 and refused.identity is None
    _, allowed = decide(
        keeper, path, "POST", {**cookie, "Origin": "http://127.0.0.1:5000"}, session
    )
    assert allowed.response is None and allowed.identity == session
    _, read = decide(keeper, "/ajax-api/2.0/mlflow/runs/get", "GET", cookie, session)
    assert read.response is None
