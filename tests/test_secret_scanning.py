"""Leaked keys: GitHub's secret scanning reports against a real server (two workers) and a
local "GitHub" on loopback (tests/github_scanning.py: ECDSA P-256 key pairs, the key set in
GitHub's format, signed reports). A reported live key is refused on both workers within 1 s
and audited; every bad report (forged, wrong key id, changed body, missing headers, malformed,
oversized, too many) changes nothing. The documented regular expression and the documented
way to sign a report yourself are run as written."""

from __future__ import annotations

import functools
import http.client
import json
import re
import socket
import subprocess
import sys
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec

from mlflow_hokusai.auth.secret_scanning import (
    MAX_REPORT_BYTES,
    ScannerKeys,
    parse_key_set,
)
from mlflow_hokusai.keys.format import SCANNER_PATTERN, generate_key
from tests.github_scanning import TOKEN_TYPE, GitHubScanner, public_pem, signature
from tests.helpers import api_key_for
from tests.server import Server, clean_env
from tests.webhook_receiver import Receiver

SCAN = "/api/2.0/mlflow/hokusai/secret-scanning"
WHOAMI = "/api/2.0/mlflow/hokusai/whoami"
AUDIT = "/api/2.0/mlflow/hokusai/audit/list"
LEAK_URL = "https://github.com/octo-org/octo-repo/blob/main/x.py"
DOC = Path(__file__).resolve().parent.parent / "docs" / "key-management.md"
LIMIT = 20  # reports per minute and address on the module's server
WEBHOOK_SECRET = "secret-scanning-webhook-secret-0123"


@pytest.fixture(scope="module")
def github():
    scanner = GitHubScanner()
    yield scanner
    scanner.stop()


@pytest.fixture(scope="module")
def receiver():
    """The key owners' webhook receiver (tests/webhook_receiver.py checks signatures)."""
    listening = Receiver(WEBHOOK_SECRET).start()
    yield listening
    listening.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory, github, receiver):
    env = {
        "HOKUSAI_SECRET_SCANNING_KEYS_URL": github.keys_url,
        "HOKUSAI_SECRET_SCANNING_LIMIT": f"{LIMIT}/minute",
        "HOKUSAI_KEY_WEBHOOK_URLS": receiver.url,
        "HOKUSAI_KEY_WEBHOOK_SECRET": WEBHOOK_SECRET,
    }
    srv = Server(str(tmp_path_factory.mktemp("scanning")), workers=2, env=env).start()
    yield srv
    srv.stop()


# 127.0.N.M: a new address for each report (they are limited per address)
_sources = (f"127.0.{n}.{m}" for n in range(10, 250) for m in range(1, 250))


def post(server, body: bytes, headers: dict, path: str = SCAN, source: str | None = None):
    """One report on a new connection (so reports spread over both workers), from its own
    loopback address unless named: (status, lower-case headers, JSON answer)."""
    host, port = server.url.split("//", 1)[1].split(":")
    source = source or next(_sources)
    conn = http.client.HTTPConnection(host, int(port), timeout=60, source_address=(source, 0))
    try:
        conn.request("POST", path, body, {"Content-Type": "application/json", **headers})
        response = conn.getresponse()
        data = response.read()
        answer_headers = {k.lower(): v for k, v in response.getheaders()}
        return response.status, answer_headers, json.loads(data or b"null")
    finally:
        conn.close()


def report(server, github, *tokens: str, path: str = SCAN, url: str = LEAK_URL):
    body = github.body(*tokens, url=url)
    return post(server, body, github.headers(body), path=path)


def analysis(tokens, labels) -> list[dict]:
    return [
        {"token_raw": token, "token_type": TOKEN_TYPE, "label": label}
        for token, label in zip(tokens, labels, strict=True)
    ]


def events(server, key_id: str, event: str) -> list[dict]:
    answer = server.get(AUDIT, server.admin_key, params={"key_id": key_id, "event": event})
    assert answer.status_code == 200, answer.text
    return answer.json()["events"]


def key_id(server, key: str) -> str:
    return server.get(WHOAMI, key).json()["key_id"]


def both_workers_hold_the_key_set(server, github) -> None:
    """Valid reports on new connections until each worker has fetched the key set once."""
    deadline = time.monotonic() + 120
    while github.fetches < server.workers and time.monotonic() < deadline:
        assert report(server, github, "not-a-key")[0] == 200
    assert github.fetches == server.workers


# -- a leaked key ------------------------------------------------------------------------------
def test_a_leaked_key_is_refused_on_both_workers_within_a_second(server, github, receiver):
    both_workers_hold_the_key_set(server, github)
    key = api_key_for(server, "leaky")
    leaked_id = key_id(server, key)
    for _ in range(20):  # new connections: both workers have the key in their caches
        assert server.get(WHOAMI, key).status_code == 200
    status, headers, answer = report(server, github, key)
    answered = time.monotonic()
    assert status == 200, answer
    assert answer == analysis([key], ["true_positive"])
    assert headers["cache-control"] == "no-store"
    time.sleep(max(0.0, answered + 1.0 - time.monotonic()))
    assert [server.get(WHOAMI, key).status_code for _ in range(40)] == [401] * 40
    # Each worker audits its first refusal of the key: two rows, two workers refusing it.
    deadline = time.monotonic() + 60
    while len(events(server, leaked_id, "denied-use")) < 2 and time.monotonic() < deadline:
        assert server.get(WHOAMI, key).status_code == 401
        time.sleep(0.05)
    assert len(events(server, leaked_id, "denied-use")) == 2
    (revoked,) = events(server, leaked_id, "revoked")
    assert revoked["detail"] == f"leaked: {LEAK_URL}"
    assert revoked["actor"] == "secret-scanning" and revoked["username"] == "leaky"
    assert re.fullmatch(r"127\.0\.\d+\.\d+", revoked["address"])
    # The owner's webhook receiver is told, signed, with the reason.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not _revocations(receiver, leaked_id):
        time.sleep(0.2)
    (told,) = _revocations(receiver, leaked_id)
    assert told.valid and told.payload["data"]["reason"] == "leaked"
    assert told.payload["data"]["owner"] == "leaky" and key not in told.body


def _revocations(receiver, revoked_id: str) -> list:
    return [d for d in receiver.got("revoked") if d.payload["data"]["key_id"] == revoked_id]


def test_a_key_already_revoked_is_a_false_positive_and_nothing_changes(server, github):
    key = api_key_for(server, "leaky-twice")
    leaked_id = key_id(server, key)
    assert report(server, github, key)[2] == analysis([key], ["true_positive"])
    for path in (SCAN, "/ajax-api/2.0/mlflow/hokusai/secret-scanning", "/api/mlflow" + SCAN):
        status, _, answer = report(server, github, key, path=path)
        assert (status, answer) == (200, analysis([key], ["false_positive"])), path
    assert len(events(server, leaked_id, "revoked")) == 1


def test_unknown_tokens_are_false_positives_beside_a_real_leak(server, github):
    live = api_key_for(server, "leaky-mixed")
    bystander = api_key_for(server, "bystander")
    mistyped = live[:-1] + ("A" if live[-1] != "A" else "B")  # its checksum fails
    tokens = [generate_key(), "hk_live_short", "ghp_not_ours", mistyped, live, live]
    status, _, answer = report(server, github, *tokens, path="/api/mlflow" + SCAN)
    assert status == 200, answer
    labels = ["false_positive"] * 4 + ["true_positive"] * 2  # a token named twice: one verdict
    assert answer == analysis(tokens, labels)
    assert all(set(entry) == {"token_raw", "token_type", "label"} for entry in answer)
    assert server.get(WHOAMI, bystander).status_code == 200
    assert len(events(server, key_id(server, bystander), "revoked")) == 0


def test_an_expired_key_is_a_false_positive_and_stays_unrevoked(server, github):
    from tests.helpers import insert_expired_key

    api_key_for(server, "leaky-expired")
    key = insert_expired_key(server.database_uri, "leaky-expired")
    assert report(server, github, key)[2] == analysis([key], ["false_positive"])
    listed = server.get(
        "/api/2.0/mlflow/hokusai/api-keys/list?username=leaky-expired", server.admin_key
    ).json()["api_keys"]
    assert [k["status"] for k in listed if k["name"] == "expired"] == ["expired"]


# -- GitHub's keys ------------------------------------------------------------------------------
def test_a_rotated_github_key_is_fetched_and_made_up_ids_at_most_once_a_minute(server, github):
    """GitHub publishes a new signing key: each worker fetches the key set again on its first
    report signed with it, and made-up key ids within the minute fetch nothing more."""
    both_workers_hold_the_key_set(server, github)
    before = github.fetches
    github.rotate()
    for _ in range(10):  # both workers meet the new key
        status, _, answer = report(server, github, "not-a-key")
        assert status == 200, answer
    for made_up in ["0" * 64, "made-up", "f" * 64] * 4:
        body = github.body("not-a-key")
        status, _, answer = post(server, body, github.headers(body, key_id=made_up))
        assert status == 401, answer
        assert answer["error_code"] == "UNAUTHENTICATED"
        assert "does not publish" in answer["message"]
    assert 1 <= github.fetches - before <= server.workers


# -- bad reports change nothing -------------------------------------------------------------
@pytest.fixture(scope="module")
def bystander(server):
    """A live key named in every bad report below (``test_bad_reports_changed_nothing``
    checks it afterwards)."""
    return api_key_for(server, "never-revoked")


def _refused(status, answer, expected_status, code, words):
    assert status == expected_status, answer
    assert answer["error_code"] == code, answer
    assert words in answer["message"], answer


def test_a_forged_signature_is_401(server, github, bystander):
    body = github.body(bystander)
    forger = ec.generate_private_key(ec.SECP256R1())
    status, headers, answer = post(server, body, github.headers(body, private_key=forger))
    _refused(status, answer, 401, "UNAUTHENTICATED", "signature does not verify")
    # The operator sees why in the server's log (an INFO line of the package's).
    said = "secret scanning report from"
    deadline = time.monotonic() + 10
    while said not in server.log_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    refusals = [line for line in server.log_text().splitlines() if said in line]
    assert refusals and "refused: " in refusals[-1] and "INFO" in refusals[-1], refusals


def test_a_replayed_report_with_a_changed_body_is_401(server, github, bystander):
    signed = github.body("not-a-key")
    changed = github.body(bystander)
    status, _, answer = post(server, changed, github.headers(signed))
    _refused(status, answer, 401, "UNAUTHENTICATED", "signature does not verify")
    # One byte added (white space, same JSON): still not what was signed.
    status, _, answer = post(server, signed + b" ", github.headers(signed))
    _refused(status, answer, 401, "UNAUTHENTICATED", "signature does not verify")


def test_a_signature_under_another_key_id_is_401(server, github, bystander):
    if len(github.keys) == 1:  # run alone, without the rotation above
        github.rotate()
    body = github.body(bystander)
    other_id, _ = github.keys[0]  # published, known to the server, but not the signer
    status, _, answer = post(server, body, github.headers(body, key_id=other_id))
    _refused(status, answer, 401, "UNAUTHENTICATED", "signature does not verify")


@pytest.mark.parametrize(
    "drop, words",
    [
        ("Github-Public-Key-Identifier", "Github-Public-Key-Identifier header is required"),
        ("Github-Public-Key-Signature", "Github-Public-Key-Signature header is required"),
    ],
)
def test_missing_headers_are_400(server, github, bystander, drop, words):
    body = github.body(bystander)
    headers = {k: v for k, v in github.headers(body).items() if k != drop}
    status, _, answer = post(server, body, headers)
    _refused(status, answer, 400, "BAD_REQUEST", words)


def test_a_signature_that_is_not_base64_is_401(server, github, bystander):
    body = github.body(bystander)
    headers = {**github.headers(body), "Github-Public-Key-Signature": "not base64!"}
    _refused(*_status_answer(post(server, body, headers)), 401, "UNAUTHENTICATED", "not base64")


def _status_answer(result):
    return result[0], result[2]


@pytest.mark.parametrize(
    "body, words",
    [
        (b"{not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b'{"token": "x"}', "must be a JSON list"),
        (b'["hk_live_x"]', "entry 0 must be a JSON object"),
        (
            b'[{"token": 1, "type": "t", "url": "u", "source": "s"}]',
            "entry 0 needs a string 'token'",
        ),
        (b'[{"token": "t", "type": "t", "url": "u"}]', "entry 0 needs a string 'source'"),
    ],
)
def test_malformed_signed_reports_are_400(server, github, bystander, body, words):
    status, _, answer = post(server, body, github.headers(body))
    _refused(status, answer, 400, "INVALID_PARAMETER_VALUE", words)


def test_an_empty_report_is_an_empty_analysis(server, github):
    body = b"[]"
    assert _status_answer(post(server, body, github.headers(body))) == (200, [])


# -- sizes and limits ---------------------------------------------------------------------------
def _raw_post_declared(server, declared: int, sent: bytes):
    """Headers declaring ``declared`` bytes, then only ``sent``: (status, JSON answer), read
    without sending the rest."""
    host, port = server.url.split("//", 1)[1].split(":")
    head = (
        f"POST {SCAN} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {declared}\r\nGithub-Public-Key-Identifier: x\r\n"
        "Github-Public-Key-Signature: eA==\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(head + sent)
        reader = sock.makefile("rb")
        status = int(reader.readline().split()[1])
        length = 0
        for line in iter(reader.readline, b"\r\n"):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        return status, json.loads(reader.read(length))


def test_a_5_mib_report_is_413_before_it_is_read(server, github, bystander):
    # Declared 5 MiB, 64 KiB sent: the answer comes without the rest.
    status, answer = _raw_post_declared(server, 5 * 1024 * 1024, b"[" + b" " * 65536)
    _refused(status, answer, 413, "REQUEST_TOO_LARGE", "larger than 1,048,576 bytes")
    # A whole signed 5 MiB report naming the key (white space pads it): refused.
    body = github.body(bystander)[:-1] + b" " * (5 * 1024 * 1024) + b"]"
    status, _, answer = post(server, body, github.headers(body))
    _refused(status, answer, 413, "REQUEST_TOO_LARGE", "1 MiB")


def test_a_report_sent_in_chunks_is_read_no_further_than_1_mib(server, github, bystander):
    body = github.body(bystander)[:-1] + b" " * (2 * 1024 * 1024) + b"]"

    def chunks():
        for start in range(0, len(body), 256 * 1024):
            yield body[start : start + 256 * 1024]

    answer = requests.post(
        server.url + SCAN, data=chunks(), headers=github.headers(body), timeout=60
    )
    _refused(answer.status_code, answer.json(), 413, "REQUEST_TOO_LARGE", "1 MiB")
    # A small report sent in chunks (no Content-Length) is read and judged as any other.
    small = github.body("not-a-key")
    answer = requests.post(
        server.url + SCAN,
        data=iter([small[:10], small[10:]]),
        headers=github.headers(small),
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == analysis(["not-a-key"], ["false_positive"])


def test_a_report_of_exactly_1_mib_is_read(server, github):
    body = github.body("not-a-key")
    body = body[:-1] + b" " * (MAX_REPORT_BYTES - len(body)) + b"]"
    assert len(body) == MAX_REPORT_BYTES
    assert _status_answer(post(server, body, github.headers(body)))[0] == 200
    status, _, answer = post(server, body + b" ", github.headers(body + b" "))
    assert status == 413, answer


def test_reports_are_limited_per_address(server, github):
    body = github.body("not-a-key")
    headers = github.headers(body)
    source = "127.0.250.1"
    codes = [post(server, body, headers, source=source)[0] for _ in range(LIMIT)]
    assert codes == [200] * LIMIT
    status, answer_headers, answer = post(server, body, headers, source=source)
    _refused(status, answer, 429, "REQUEST_LIMIT_EXCEEDED", f"at most {LIMIT}/minute")
    assert int(answer_headers["retry-after"]) >= 1
    # Unsigned reports count too; another address is not affected.
    assert post(server, b"[]", {}, source=source)[0] == 429
    assert post(server, body, headers, source="127.0.251.1")[0] == 200


def test_bad_reports_changed_nothing(server, bystander):
    """After every refused report above that named it, the bystander's key still works and
    was never revoked."""
    assert server.get(WHOAMI, bystander).status_code == 200
    assert events(server, key_id(server, bystander), "revoked") == []


def test_under_gunicorn_the_same_rules_hold(github, tmp_path):
    """The WSGI path: the gate refuses a declared size, the view caps a chunked body."""
    env = {"HOKUSAI_SECRET_SCANNING_KEYS_URL": github.keys_url}
    args = ["--gunicorn-opts", "--timeout 120 --workers 1"]
    with Server(str(tmp_path), env=env, args=args) as wsgi:
        key = api_key_for(wsgi, "leaky-wsgi")
        assert report(wsgi, github, key)[2] == analysis([key], ["true_positive"])
        assert wsgi.get(WHOAMI, key).status_code == 401
        status, answer = _raw_post_declared(wsgi, 5 * 1024 * 1024, b"[" + b" " * 65536)
        _refused(status, answer, 413, "REQUEST_TOO_LARGE", "1 MiB")
        big = github.body("not-a-key")[:-1] + b" " * (2 * 1024 * 1024) + b"]"
        chunked = requests.post(
            wsgi.url + SCAN,
            data=(big[i : i + 65536] for i in range(0, len(big), 65536)),
            headers=github.headers(big),
            timeout=60,
        )
        _refused(chunked.status_code, chunked.json(), 413, "REQUEST_TOO_LARGE", "1 MiB")
        small = github.body("not-a-key")
        chunked = requests.post(
            wsgi.url + SCAN,
            data=iter([small[:10], small[10:]]),
            headers=github.headers(small),
            timeout=60,
        )
        assert chunked.status_code == 200, chunked.text


# -- the documentation --------------------------------------------------------------------------
def _section() -> str:
    doc = DOC.read_text(encoding="utf-8")
    start = doc.index("## Leaked keys: secret scanning")
    return doc[start : doc.index("\n## ", start + 1)]


def test_the_documented_regex_is_the_key_format_and_finds_keys_only():
    pattern = re.search(r"```text\n(.*?)\n```", _section(), re.S).group(1)
    assert pattern == SCANNER_PATTERN
    for environment in ("live", "test"):
        key = generate_key(environment)
        assert re.fullmatch(pattern, key)
        assert [m.group(0) for m in re.finditer(pattern, f'API_KEY = "{key}"\n')] == [key]
    key = generate_key()
    near_misses = [
        key[:-1],  # one character short
        key + "x",  # one too many: no whole word
        key.replace("hk_live_", "hk_prod_"),
        key.replace("hk_live_", "HK_LIVE_"),
        key.replace("hk_live_", "hk-live-"),
        key[:20] + "-" + key[21:],
        "x" + key,  # inside a longer word
    ]
    for miss in near_misses:
        assert re.search(pattern, miss) is None, miss


@pytest.fixture(scope="module")
def documented(tmp_path_factory):
    """The documented key pair and key set (the section's first Python block, run as written
    in a fresh folder), served over HTTP on loopback as the docs' `python -m http.server` does."""
    folder = tmp_path_factory.mktemp("documented")
    blocks = re.findall(r"```python\n(.*?)```", _section(), re.S)
    assert len(blocks) == 2
    (folder / "make_keys.py").write_text(blocks[0])
    (folder / "send_report.py").write_text(blocks[1])
    subprocess.run([sys.executable, "make_keys.py"], cwd=folder, check=True, timeout=120)

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(folder / "scan-test" / "public"))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{httpd.server_address[1]}/keys.json", httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def documented_server(tmp_path_factory, documented):
    _, keys_url, _ = documented
    env = {"HOKUSAI_SECRET_SCANNING_KEYS_URL": keys_url}
    srv = Server(str(tmp_path_factory.mktemp("documented-server")), workers=1, env=env).start()
    yield srv
    srv.stop()


def test_the_documented_report_signing_revokes_a_key(documented, documented_server):
    folder, _, _ = documented
    key = api_key_for(documented_server, "leak-test")

    def send():
        env = clean_env(HOKUSAI_URL=documented_server.url, LEAKED_KEY=key)
        done = subprocess.run(
            [sys.executable, "send_report.py"],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert send() == f"200 {analysis([key], ['true_positive'])}"
    assert documented_server.get(WHOAMI, key).status_code == 401
    (revoked,) = events(
        documented_server, key_id_of_revoked(documented_server, "leak-test"), "revoked"
    )
    assert (
        revoked["detail"] == "leaked: https://github.com/octo-org/octo-repo/blob/main/settings.py"
    )
    assert send() == f"200 {analysis([key], ['false_positive'])}"


def key_id_of_revoked(server, username: str) -> str:
    listed = server.get(
        f"/api/2.0/mlflow/hokusai/api-keys/list?username={username}", server.admin_key
    ).json()["api_keys"]
    (record,) = [k for k in listed if k["status"] == "revoked"]
    return record["id"]


def test_an_unreachable_key_set_is_503_and_changes_nothing(documented, documented_server):
    """After the test above: the worker holds the documented key. With the key set's server
    gone, a report signed with it is still checked (from the cache); one signed with a key id
    the cache does not have cannot be, and changes nothing."""
    folder, _, httpd = documented
    httpd.shutdown()
    httpd.server_close()
    key = api_key_for(documented_server, "leak-test-2")
    body = GitHubScanner.body(key)
    stranger = ec.generate_private_key(ec.SECP256R1())
    headers = {
        "Github-Public-Key-Identifier": "a-key-id-not-seen-yet",
        "Github-Public-Key-Signature": signature(stranger, body),
    }
    status, answer_headers, answer = post(documented_server, body, headers)
    _refused(status, answer, 503, "TEMPORARILY_UNAVAILABLE", "nothing was changed")
    assert int(answer_headers["retry-after"]) >= 1
    assert documented_server.get(WHOAMI, key).status_code == 200
    from cryptography.hazmat.primitives import serialization

    private = serialization.load_pem_private_key(
        (folder / "scan-test" / "private.pem").read_bytes(), password=None
    )
    headers = {
        "Github-Public-Key-Identifier": (folder / "scan-test" / "key-id").read_text(),
        "Github-Public-Key-Signature": signature(private, body),
    }
    status, _, answer = post(documented_server, body, headers)
    assert (status, answer) == (200, analysis([key], ["true_positive"]))


# -- the key set, in-process ----------------------------------------------------------------
def test_the_key_set_keeps_p256_keys_only():
    from cryptography.hazmat.primitives.asymmetric import rsa

    p256 = ec.generate_private_key(ec.SECP256R1())
    p384 = ec.generate_private_key(ec.SECP384R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    keys = parse_key_set(
        {
            "public_keys": [
                {"key_identifier": "a", "key": public_pem(p256), "is_current": True},
                {"key_identifier": "b", "key": public_pem(p384), "is_current": False},
                {"key_identifier": "c", "key": public_pem(rsa_key), "is_current": False},
                {"key_identifier": "d", "key": "not a pem"},
                "junk",
            ]
        }
    )
    assert list(keys) == ["a"]
    with pytest.raises(ValueError):
        parse_key_set({"keys": []})


def test_unknown_key_ids_refetch_once_a_minute_by_the_clock():
    """The minute is the cache's own clock (a parameter), so the test need not wait one."""
    from mlflow_hokusai.auth.secret_scanning import ReportRejected

    now = [1000.0]
    fetched = []
    published = {"old": object()}

    def fetch(url):
        fetched.append(now[0])
        return dict(published)

    keys = ScannerKeys("https://keys.example", fetch=fetch, clock=lambda: now[0])
    assert keys.key("old") is published["old"]
    for _ in range(3):  # one fetch for the first made-up id, none for the others
        with pytest.raises(ReportRejected):
            keys.key("made-up")
    published["new"] = object()  # a rotation
    now[0] += 30
    with pytest.raises(ReportRejected):
        keys.key("new")  # within the minute: not fetched again
    now[0] += 31
    assert keys.key("new") is published["new"]
    assert fetched == [1000.0, 1000.0, 1061.0]
