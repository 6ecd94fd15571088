"""The one request parser for credentials.

Accepted: ``Authorization: Bearer <key>`` (what MLFLOW_TRACKING_TOKEN sends),
``X-API-Key: <key>``, and ``Authorization: Basic`` with a key as the password (browsers and
the MLflow UI; the username is then ignored) or with an MLflow username and password; without
any of those, the session cookie of a person signed in through the OpenID provider
(``auth/sessions.py``: a browser, never an API client).
Works on any case-insensitive header mapping, so the ASGI gate and Flask share it.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Literal

from mlflow_hokusai.keys.format import looks_like_key

MAX_HEADER_LENGTH = 4096
CredentialKind = Literal["none", "key", "password", "session", "malformed"]
SESSION_COOKIE = "hokusai_session"  # distinct from the provider's own cookies on the host


@dataclass(frozen=True)
class Credential:
    kind: CredentialKind
    key: str = ""  # the API key, or the session cookie's value
    username: str = ""
    password: str = ""
    problem: str = ""


NONE = Credential("none")


def _malformed(problem: str) -> Credential:
    return Credential("malformed", problem=problem)


def _from_basic(encoded: str) -> Credential:
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return _malformed("the Basic credentials are not valid base64 of 'username:password'")
    username, sep, password = decoded.partition(":")
    if not sep:
        return _malformed("the Basic credentials have no ':' between username and password")
    if looks_like_key(password):
        return Credential("key", key=password, username=username)
    if looks_like_key(username) and not password:
        return Credential("key", key=username)  # curl -u KEY:
    if not username or not password:
        return _malformed("the Basic credentials need a username and a password (or an API key)")
    return Credential("password", username=username, password=password)


def parse(authorization: str | None, api_key: str | None) -> Credential:
    """Parse the Authorization and X-API-Key header values (None when absent)."""
    for value in (authorization, api_key):
        if value is not None and len(value) > MAX_HEADER_LENGTH:
            return _malformed("the credential header is too long")
    from_header = NONE
    if authorization is not None and authorization.strip():
        scheme, _, rest = authorization.strip().partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer":
            token = rest.strip()
            from_header = (
                Credential("key", key=token) if token else _malformed("empty Bearer token")
            )
        elif scheme == "basic":
            from_header = _from_basic(rest)
        else:
            return _malformed("unsupported Authorization scheme; use Bearer or Basic")
        if from_header.kind == "malformed":
            return from_header
    if api_key is not None and api_key.strip():
        token = api_key.strip()
        if from_header.kind == "none" or (from_header.kind == "key" and from_header.key == token):
            return Credential("key", key=token)
        return _malformed("the X-API-Key and Authorization headers carry different credentials")
    return from_header


def session_cookie(cookie_headers: list[str]) -> str | None:
    """The value of our session cookie in the ``Cookie`` header(s), None when absent; "" when
    it is there more than once with different values (ambiguous: refused)."""
    found = set()
    for header in cookie_headers:
        if len(header) > 4 * MAX_HEADER_LENGTH:
            return ""
        for pair in header.split(";"):
            name, sep, value = pair.strip().partition("=")
            if sep and name == SESSION_COOKIE:
                found.add(value.strip().strip('"'))
    if len(found) > 1:
        return ""
    return found.pop() if found else None


def from_headers(get_all) -> Credential:
    """Parse from a function returning all values of a header name (case-insensitive).

    A repeated credential header is ambiguous, so it is refused rather than guessed at. A key
    or password wins over a session cookie (an API client's header says who it is).
    """
    values = []
    for name in ("Authorization", "X-API-Key"):
        found = get_all(name)
        if len(found) > 1:
            return _malformed(f"more than one {name} header")
        values.append(found[0] if found else None)
    credential = parse(*values)
    if credential.kind != "none":
        return credential
    session = session_cookie(get_all("Cookie"))
    if session is None:
        return credential
    if not session:
        return _malformed(f"the {SESSION_COOKIE} cookie is sent more than once")
    return Credential("session", key=session)
