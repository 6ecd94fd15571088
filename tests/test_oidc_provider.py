"""The OpenID provider harness (tests/oidc_provider.py) used as a real relying party uses a
provider: Authlib's OAuth2 client, the authorization code flow with PKCE S256, state and nonce,
the ID token verified against the provider's JWKS, userinfo, and RP-initiated logout."""

from __future__ import annotations

import base64
import json
import warnings
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from authlib.common.security import generate_token
from authlib.integrations.base_client import OAuthError
from authlib.integrations.requests_client import OAuth2Session

with warnings.catch_warnings():  # Authlib 1.6+ points at joserfc; authlib.jose stays until 2.0
    warnings.simplefilter("ignore")
    from authlib.jose import JsonWebKey, jwt
    from authlib.jose.errors import BadSignatureError, InvalidClaimError

from tests.oidc_provider import (
    CLIENT_ID,
    CLIENT_SECRET,
    POST_LOGOUT_REDIRECT_URI,
    REDIRECT_URI,
    oidc_provider,
    sign_in,
    sign_out,
)

SCOPE = "openid profile email groups"


@pytest.fixture(scope="module")
def op():
    with oidc_provider() as provider:
        yield provider


def discover(issuer: str) -> dict:
    resp = requests.get(f"{issuer}/.well-known/openid-configuration", timeout=10)
    resp.raise_for_status()
    return resp.json()


def rp(**kwargs) -> OAuth2Session:
    return OAuth2Session(CLIENT_ID, CLIENT_SECRET, scope=SCOPE, redirect_uri=REDIRECT_URI, **kwargs)


def code_flow(op, username: str, browser: requests.Session | None = None) -> dict:
    """Discovery, the authorization URL (PKCE S256, state, nonce), sign-in, token exchange.
    ``browser`` carries the provider's cookies (a fresh one when None)."""
    meta = discover(op.issuer)
    client = rp(code_challenge_method="S256")
    verifier, nonce = generate_token(64), generate_token(24)
    url, state = client.create_authorization_url(
        meta["authorization_endpoint"], code_verifier=verifier, nonce=nonce
    )
    query = parse_qs(urlsplit(url).query)
    assert query["code_challenge_method"] == ["S256"] and query["nonce"] == [nonce]

    browser = browser or requests.Session()
    callback = sign_in(browser, url, username)

    assert callback.startswith(REDIRECT_URI + "?")
    params = parse_qs(urlsplit(callback).query)
    assert params["state"] == [state]
    assert params["iss"] == [op.issuer]  # RFC 9207
    token = client.fetch_token(
        meta["token_endpoint"],
        authorization_response=callback,
        state=state,
        code_verifier=verifier,
    )
    assert token["token_type"].lower() == "bearer"
    assert "refresh_token" not in token
    jwks = JsonWebKey.import_key_set(requests.get(meta["jwks_uri"], timeout=10).json())
    claims = jwt.decode(
        token["id_token"],
        jwks,
        claims_options={
            "iss": {"essential": True, "value": op.issuer},
            "aud": {"essential": True, "value": CLIENT_ID},
            "exp": {"essential": True},
            "nonce": {"essential": True, "value": nonce},
        },
    )
    claims.validate()
    assert claims.header["alg"] == "RS256"
    return {
        "meta": meta,
        "client": client,
        "token": token,
        "claims": claims,
        "jwks": jwks,
        "browser": browser,
    }


def test_discovery(op):
    meta = discover(op.issuer)
    assert op.issuer.startswith("http://127.0.0.1:")
    assert meta["issuer"] == op.issuer
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["id_token_signing_alg_values_supported"] == ["RS256"]
    assert {"openid", "profile", "email", "groups"} <= set(meta["scopes_supported"])
    assert {"preferred_username", "email", "groups"} <= set(meta["claims_supported"])
    assert meta["end_session_endpoint"] == f"{op.issuer}/session/end"
    assert meta["userinfo_endpoint"].startswith(op.issuer)


def test_code_flow_with_pkce_id_token_and_userinfo(op):
    flow = code_flow(op, "alice")
    claims = flow["claims"]
    assert claims["sub"] == "user-alice"
    # sub_only (the default): the scopes' claims are userinfo's, not the ID token's
    assert "preferred_username" not in claims and "groups" not in claims

    info = flow["client"].get(flow["meta"]["userinfo_endpoint"], timeout=10)
    assert info.status_code == 200, info.text
    info = info.json()
    assert info["sub"] == "user-alice"
    assert info["preferred_username"] == "alice"
    assert info["email"] == "alice@example.com"
    assert info["groups"] == ["ml-admins", "ml-readers"]

    # the signature is checked: a tampered payload is refused
    header, payload, signature = flow["token"]["id_token"].split(".")
    forged = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    forged["sub"] = "user-bob"
    forged = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    with pytest.raises(BadSignatureError):
        jwt.decode(f"{header}.{forged}.{signature}", flow["jwks"])


def test_everything_in_the_id_token_when_asked():
    with oidc_provider(id_token_claims="all") as op:
        claims = code_flow(op, "bob")["claims"]
    assert claims["sub"] == "user-bob"
    assert claims["preferred_username"] == "bob"
    assert claims["email"] == "bob@example.com"
    assert claims["groups"] == ["ml-readers"]


def test_a_request_without_pkce_is_refused(op):
    meta = discover(op.issuer)
    url, state = rp().create_authorization_url(meta["authorization_endpoint"], nonce="n-1")
    assert "code_challenge" not in url
    callback = sign_in(requests.Session(), url, "alice")
    params = parse_qs(urlsplit(callback).query)
    assert "code" not in params
    assert params["error"] == ["invalid_request"]
    assert "PKCE" in params["error_description"][0]
    assert params["state"] == [state]


def test_a_wrong_code_verifier_is_refused(op):
    meta = discover(op.issuer)
    client = rp(code_challenge_method="S256")
    url, state = client.create_authorization_url(
        meta["authorization_endpoint"], code_verifier=generate_token(64), nonce="n-2"
    )
    callback = sign_in(requests.Session(), url, "alice")
    with pytest.raises(OAuthError, match="invalid_grant"):
        client.fetch_token(
            meta["token_endpoint"],
            authorization_response=callback,
            state=state,
            code_verifier=generate_token(64),
        )


def test_wrong_nonce_or_audience_is_caught(op):
    flow = code_flow(op, "carol")
    for option in ({"nonce": {"essential": True, "value": "other"}}, {"aud": {"value": "other"}}):
        claims = jwt.decode(flow["token"]["id_token"], flow["jwks"], claims_options=option)
        with pytest.raises(InvalidClaimError):
            claims.validate()


def test_an_unknown_username_is_refused(op):
    meta = discover(op.issuer)
    url, _ = rp(code_challenge_method="S256").create_authorization_url(
        meta["authorization_endpoint"], code_verifier=generate_token(64), nonce="n-3"
    )
    with pytest.raises(RuntimeError, match="unknown user: mallory"):
        sign_in(requests.Session(), url, "mallory")


def test_rp_initiated_logout(op):
    flow = code_flow(op, "alice")
    browser = flow["browser"]
    # the provider's session is kept in the browser's cookies: no login form the second time
    again = code_flow(op, "ignored: already signed in", browser)
    assert again["claims"]["sub"] == "user-alice"

    url = (
        flow["meta"]["end_session_endpoint"]
        + "?"
        + urlencode(
            {
                "id_token_hint": flow["token"]["id_token"],
                "post_logout_redirect_uri": POST_LOGOUT_REDIRECT_URI,
                "state": "bye",
            }
        )
    )
    back = sign_out(browser, url)
    assert back.startswith(POST_LOGOUT_REDIRECT_URI)
    assert parse_qs(urlsplit(back).query)["state"] == ["bye"]

    # signed out: the login form is back
    with pytest.raises(RuntimeError, match="unknown user: mallory"):
        code_flow(op, "mallory", browser)
