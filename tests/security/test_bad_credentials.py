"""A corpus of bad credentials, sent as raw header bytes: every one is a 401 JSON, never a 500.

Exception, documented in the README: a header too large for the HTTP server itself (uvicorn's
h11 parser refuses a request head over 16 KiB with a 4xx before any app code runs) — that is
accepted as long as it is a 4xx.
"""

import base64
import time

import pytest

from mlflow_hokusai.keys.format import _checksum, generate_key
from tests.helpers import insert_expired_key, key_id_of
from tests.security.raw import send

TARGETS = [
    ("GET", "/api/2.0/mlflow/experiments/search?max_results=1"),
    ("GET", "/api/mlflow/api/2.0/mlflow/hokusai/whoami"),
    ("POST", "/ajax-api/3.0/jobs/search"),
    ("GET", "/api/2.0/mlflow-artifacts/artifacts"),
]


def b64(text) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def _rechecksum(head: str) -> str:
    return head + _checksum(head)


@pytest.fixture(scope="module")
def corpus(server):
    live = server.create_key("corpus-owner")
    revoked = server.create_key("corpus-owner")
    server.cli("keys", "revoke", key_id_of(server, revoked))
    expired = insert_expired_key(server.database_uri, "corpus-owner")
    time.sleep(1.1)  # past the key cache of workers that saw `revoked` active
    body = live[len("hk_live_") :]
    flipped = live[:-1] + ("A" if live[-1] != "A" else "B")
    as_test = "hk_test_" + body  # same secret, another environment's prefix: bad checksum
    as_test_valid = _rechecksum("hk_test_" + body[:-6])  # ... with a matching checksum
    auth = "Authorization"
    cases = {
        "empty Authorization": [(auth, "")],
        "whitespace Authorization": [(auth, "   \t ")],
        "Bearer and nothing": [(auth, "Bearer")],
        "Bearer and whitespace": [(auth, "Bearer     ")],
        "16 KiB Bearer": [(auth, "Bearer " + "A" * 16384)],
        "16 KiB X-API-Key": [("X-API-Key", "hk_live_" + "A" * 16384)],
        "5 KiB Bearer": [(auth, "Bearer hk_live_" + "A" * 5000)],
        "non-UTF-8 Bearer": [(auth, b"Bearer hk_live_\xff\xfe\xfd\x80\x81")],
        "non-UTF-8 X-API-Key": [("X-API-Key", b"\xc3\x28\xa0\xa1")],
        "non-UTF-8 Basic": [(auth, "Basic " + b64(b"\xff\xfe:\xfa\xfb"))],
        "wrong scheme Token": [(auth, "Token " + live)],
        "wrong scheme Digest": [(auth, f'Digest username="x", response="{live}"')],
        "scheme only Basic": [(auth, "Basic")],
        "Basic not base64": [(auth, "Basic %%%***")],
        "Basic without colon": [(auth, "Basic " + b64(live))],
        "prefix and junk": [(auth, "Bearer hk_live_!!!!''\"\";;--")],
        "prefix and right-length junk": [(auth, "Bearer hk_live_" + "-" * 39)],
        "prefix only": [(auth, "Bearer hk_live_")],
        "unknown environment": [(auth, "Bearer " + _rechecksum("hk_prod_" + body[:-6]))],
        "bad checksum": [(auth, "Bearer " + flipped)],
        "truncated": [(auth, "Bearer " + live[:-1])],
        "extended": [(auth, "Bearer " + live + "A")],
        "another environment's prefix": [(auth, "Bearer " + as_test)],
        "another environment, valid checksum": [(auth, "Bearer " + as_test_valid)],
        "unknown well-formed": [(auth, "Bearer " + generate_key())],
        "revoked": [(auth, "Bearer " + revoked)],
        "expired": [(auth, "Bearer " + expired)],
        "revoked as X-API-Key": [("X-API-Key", revoked)],
        "expired as Basic password": [(auth, "Basic " + b64("me:" + expired))],
        "two Authorization headers": [(auth, "Bearer " + flipped), (auth, "Bearer " + live)],
        "Authorization and X-API-Key disagree": [(auth, "Bearer " + live), ("X-API-Key", flipped)],
        "SQL in the key": [(auth, "Bearer hk_live_' OR '1'='1")],
        "NUL in the key": [(auth, b"Bearer hk_live_\x00" + b"A" * 38)],
        "CR in the key": [(auth, b"Bearer hk_live_\rX-API-Key: " + live.encode())],
        "password of no user": [(auth, "Basic " + b64("nobody:not-a-password"))],
        "admin with a key as username": [(auth, "Basic " + b64(f"admin:{flipped}"))],
    }
    return cases


# Refused by the HTTP server's parser before any app code, so not our JSON: a 4xx is required.
PARSER_REFUSALS = {"16 KiB Bearer", "16 KiB X-API-Key", "NUL in the key", "CR in the key"}


@pytest.mark.parametrize("method, path", TARGETS)
def test_every_bad_credential_is_401_json(server, corpus, method, path):
    outcomes = {}
    for name, headers in corpus.items():
        reply = send(server.url, method, path, headers, body=b"{}" if method == "POST" else b"")
        outcomes[name] = reply.status
        assert reply.status < 500, (name, reply.status, reply.text[:300])
        if name in PARSER_REFUSALS and reply.status != 401:
            assert 400 <= reply.status < 500, (name, reply.status)
            continue
        assert reply.status == 401, (name, reply.status, reply.text[:300])
        assert reply.headers["www-authenticate"] == 'Basic realm="mlflow-hokusai"'
        body = reply.json()
        assert body["error_code"] == "UNAUTHENTICATED" and body["message"], name
        assert "Traceback" not in reply.text
    odd = {k: v for k, v in outcomes.items() if v != 401}
    print(
        f"\n{method} {path}: {len(outcomes) - len(odd)} x 401" + (f", parser: {odd}" if odd else "")
    )
