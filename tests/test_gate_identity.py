"""In-process: the gate authenticates once and hands the identity on, and what the app behind
it sees of the credential is the authenticated user's name (both gates, ASGI and WSGI).

The app behind the gate is a tiny echo app, the key database a real SQLite file."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from mlflow_hokusai import _mlflow
from mlflow_hokusai.auth.authenticator import Authenticator
from mlflow_hokusai.auth.cache import LookupCache
from mlflow_hokusai.auth.context import gate_identity
from mlflow_hokusai.auth.rate_limits import RateLimits
from mlflow_hokusai.auth.scopes import ReadScope
from mlflow_hokusai.config import Settings
from mlflow_hokusai.errors import DATABASE_DOWN, STORE_DOWN
from mlflow_hokusai.gate import AsgiGate, WsgiGate
from mlflow_hokusai.keys.audit import AuditLog
from mlflow_hokusai.keys.management import issue_key
from mlflow_hokusai.routes.services import Services
from mlflow_hokusai.store.audit import AuditStore
from mlflow_hokusai.store.keys import KeyStore
from mlflow_hokusai.store.rate_counters import SqlCounterStorage
from tests.helpers import key_database


class CountingStore(KeyStore):
    lookups = 0

    def lookup(self, digest):
        CountingStore.lookups += 1
        return super().lookup(digest)


@pytest.fixture
def services(tmp_path):
    engine = key_database(tmp_path / "keys.db")
    store = CountingStore(engine)
    CountingStore.lookups = 0
    cache = LookupCache(ttl=60)
    return Services(
        settings=Settings(url_prefix="/api/mlflow"),
        key_store=store,
        cache=cache,
        authenticator=Authenticator(store, cache),
        audit=AuditLog(AuditStore(engine)),
        keys=None,
        native_routes=_mlflow.NativeRoutes(),
        read_scope=ReadScope(),
        static_prefix="",
        rate_limits=RateLimits(SqlCounterStorage(engine)),
    )


def _basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


def _asgi_call(gate, path: str, authorization: str):
    seen = {}

    async def app(scope, receive, send):
        headers = dict(scope["headers"])
        seen["authorization"] = headers.get(b"authorization", b"").decode()
        seen["identity"] = gate_identity({})
        seen["path"] = scope["path"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    sent = _asgi_request(gate, app, path, authorization)
    return sent[0]["status"], seen if seen else json.loads(sent[1]["body"])


def _asgi_request(gate, app, path: str, authorization: str) -> list[dict]:
    """One GET through ``gate`` in front of ``app`` from 127.0.0.2: the messages sent."""
    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b""}

    gate.app = app
    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"authorization", authorization.encode())],
        "client": ("127.0.0.2", 5000),
    }
    asyncio.run(gate(scope, receive, send))
    return sent


def _wsgi_call(gate, path: str, authorization: str):
    seen = {}

    def app(environ, start_response):
        seen["authorization"] = environ.get("HTTP_AUTHORIZATION", "")
        seen["identity"] = gate_identity(environ)
        seen["path"] = environ["PATH_INFO"]
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    (status, _), body = _wsgi_request(gate, app, path, authorization)
    return status, seen if body == b"ok" else json.loads(body)


def _wsgi_request(gate, app, path: str, authorization: str):
    """One GET through ``gate`` in front of ``app`` from 127.0.0.2: ((status, headers with
    lower-case names), body)."""
    gate.app = app
    started = []
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "HTTP_AUTHORIZATION": authorization,
        "REMOTE_ADDR": "127.0.0.2",
        "QUERY_STRING": "",
    }
    body = b"".join(
        gate(environ, lambda status, headers, exc=None: started.append((status, headers)))
    )
    status, headers = started[0]
    return (int(status.split()[0]), {k.lower(): v for k, v in headers}), body


@pytest.mark.parametrize("gate_class, call", [(AsgiGate, _asgi_call), (WsgiGate, _wsgi_call)])
def test_the_basic_user_name_downstream_is_the_authenticated_one(services, gate_class, call):
    key, _ = issue_key(services.key_store, "alice")
    gate = gate_class(None, services)
    status, seen = call(gate, "/api/mlflow/api/2.0/mlflow/runs/get", _basic("admin", key))
    assert status == 200
    assert seen["path"] == "/api/2.0/mlflow/runs/get"  # the prefix mapped first
    assert seen["identity"].username == "alice"
    assert seen["authorization"] == _basic("alice", "")  # not "admin", and no key
    assert key not in seen["authorization"]


@pytest.mark.parametrize("gate_class, call", [(AsgiGate, _asgi_call), (WsgiGate, _wsgi_call)])
def test_a_bearer_header_is_passed_on_unchanged(services, gate_class, call):
    key, _ = issue_key(services.key_store, "alice")
    status, seen = call(gate_class(None, services), "/api/2.0/mlflow/runs/get", f"Bearer {key}")
    assert status == 200 and seen["authorization"] == f"Bearer {key}"


def test_the_asgi_gate_looks_a_key_up_once_then_answers_from_the_cache(services):
    key, _ = issue_key(services.key_store, "alice")
    gate = AsgiGate(None, services)
    for _ in range(3):
        status, seen = _asgi_call(gate, "/api/2.0/mlflow/runs/get", f"Bearer {key}")
        assert status == 200 and seen["identity"].username == "alice"
    assert CountingStore.lookups == 1


@pytest.mark.parametrize("gate_class, call", [(AsgiGate, _asgi_call), (WsgiGate, _wsgi_call)])
def test_a_refused_key_never_reaches_the_app(services, gate_class, call):
    status, seen = call(gate_class(None, services), "/api/2.0/mlflow/runs/get", "Bearer hk_x")
    assert status == 401 and seen["error_code"] == "UNAUTHENTICATED"


DRIVER_TEXT = b'connection to server at "127.0.0.1", port 5432 failed: psycopg.OperationalError'
OURS = json.dumps({"error_code": "TEMPORARILY_UNAVAILABLE", "message": DATABASE_DOWN}).encode()


def _asgi_answer(gate, status, content_type, body):
    async def app(scope, receive, send):
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", content_type.encode())],
            }
        )
        await send({"type": "http.response.body", "body": body[:10], "more_body": True})
        await send({"type": "http.response.body", "body": body[10:]})

    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b""}

    gate.app = app
    key, _ = issue_key(gate.authenticator.store, "alice")
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/api/2.0/mlflow-artifacts/artifacts/1",
        "raw_path": b"",
        "query_string": b"",
        "client": ("127.0.0.1", 1),
        "headers": [(b"authorization", f"Bearer {key}".encode())],
    }
    asyncio.run(gate(scope, receive, send))
    headers = {k.decode(): v.decode() for k, v in sent[0].get("headers", [])}
    return sent[0]["status"], headers, b"".join(m.get("body", b"") for m in sent[1:])


def _wsgi_answer(gate, status, content_type, body):
    def app(environ, start_response):
        start_response(f"{status} X", [("Content-Type", content_type)])
        return [body[:10], body[10:]]

    gate.app = app
    key, _ = issue_key(gate.authenticator.store, "alice")
    seen = []
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/api/2.0/mlflow-artifacts/artifacts/1",
        "HTTP_AUTHORIZATION": f"Bearer {key}",
        "QUERY_STRING": "",
    }
    out = b"".join(gate(environ, lambda s, h, exc=None: seen.append((s, dict(h)))))
    return int(seen[0][0].split()[0]), {k.lower(): v for k, v in seen[0][1].items()}, out


@pytest.mark.parametrize("gate_class, answer", [(AsgiGate, _asgi_answer), (WsgiGate, _wsgi_answer)])
@pytest.mark.parametrize(
    "content_type, body, message",
    [
        ("text/plain", DRIVER_TEXT, STORE_DOWN),
        (
            "application/json",
            json.dumps(
                {"error_code": "TEMPORARILY_UNAVAILABLE", "message": DRIVER_TEXT.decode()}
            ).encode(),
            DATABASE_DOWN,
        ),
        ("application/json", OURS, DATABASE_DOWN),
    ],
)
def test_every_503_leaves_as_our_json(services, gate_class, answer, content_type, body, message):
    status, headers, out = answer(gate_class(None, services), 503, content_type, body)
    assert status == 503
    assert headers["content-type"] == "application/json" and headers["retry-after"].isdigit()
    assert json.loads(out) == {"error_code": "TEMPORARILY_UNAVAILABLE", "message": message}
    assert b"127.0.0.1" not in out and b"psycopg" not in out


@pytest.mark.parametrize("gate_class, answer", [(AsgiGate, _asgi_answer), (WsgiGate, _wsgi_answer)])
@pytest.mark.parametrize(
    "original",
    [
        (404, "application/json", b'{"error_code": "RESOURCE_DOES_NOT_EXIST"}'),
        (410, "text/html", b"<p>gone for good</p>"),
        (302, "text/html", b"<p>see elsewhere</p>"),
    ],
)
def test_other_responses_pass_unchanged(services, gate_class, answer, original):
    """Only MLflow's error answers are rewritten (an HTML 404 for an API client among them:
    tests/test_unknown_paths.py); everything else reaches the client as MLflow sent it."""
    status, headers, out = answer(gate_class(None, services), *original)
    assert (status, headers["content-type"], out) == original


def _asgi_status_headers(gate, key: str):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    sent = _asgi_request(gate, app, "/api/2.0/mlflow/runs/get", f"Bearer {key}")
    headers = {k.decode().lower(): v.decode() for k, v in sent[0]["headers"]}
    return sent[0]["status"], headers


def _wsgi_status_headers(gate, key: str):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    return _wsgi_request(gate, app, "/api/2.0/mlflow/runs/get", f"Bearer {key}")[0]


@pytest.mark.parametrize(
    "gate_class, call", [(AsgiGate, _asgi_status_headers), (WsgiGate, _wsgi_status_headers)]
)
def test_a_rate_limited_key_carries_ratelimit_headers_then_gets_429(services, gate_class, call):
    key, _ = issue_key(services.key_store, "alice", rate_limit="2/minute")
    gate = gate_class(None, services)
    answers = [call(gate, key) for _ in range(3)]
    assert [status for status, _ in answers] == [200, 200, 429]
    assert [h["ratelimit-remaining"] for _, h in answers] == ["1", "0", "0"]
    assert {h["ratelimit-limit"] for _, h in answers} == {"2"}
    assert "retry-after" not in answers[0][1] and 1 <= int(answers[2][1]["retry-after"]) <= 60
    plain, _ = issue_key(services.key_store, "alice")
    status, headers = call(gate, plain)
    assert status == 200 and "ratelimit-limit" not in headers
