"""Unit tests for the one credentials parser."""

import base64

import pytest

from mlflow_hokusai.auth.credentials import from_headers, parse
from mlflow_hokusai.keys.format import generate_key

KEY = generate_key()


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_bearer_and_x_api_key_and_basic_key():
    assert parse(f"Bearer {KEY}", None).key == KEY
    assert parse(f"bearer   {KEY} ", None).key == KEY
    assert parse(None, KEY).key == KEY
    assert parse(basic("anyone", KEY), None).key == KEY
    assert parse(basic(KEY, ""), None).key == KEY


def test_password_login():
    cred = parse(basic("alice", "s3cret!"), None)
    assert (cred.kind, cred.username, cred.password) == ("password", "alice", "s3cret!")


def test_nothing():
    assert parse(None, None).kind == "none"
    assert parse("   ", "  ").kind == "none"


@pytest.mark.parametrize(
    "authorization, api_key",
    [
        ("Token abc", None),
        ("Bearer", None),
        ("Basic !!!notbase64", None),
        ("Basic " + base64.b64encode(b"no-colon").decode(), None),
        ("Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(), None),
        (basic("alice", ""), None),
        (f"Bearer {KEY}", generate_key()),
        ("Bearer " + "x" * 20000, None),
    ],
)
def test_malformed(authorization, api_key):
    assert parse(authorization, api_key).kind == "malformed"


def test_same_key_in_both_headers_is_fine():
    assert parse(f"Bearer {KEY}", KEY).key == KEY


def test_repeated_header_is_refused():
    headers = {"Authorization": [f"Bearer {KEY}", f"Bearer {generate_key()}"], "X-API-Key": []}
    assert from_headers(lambda name: headers.get(name, [])).kind == "malformed"
