"""The gate's one decision (``gate/decision.py``), in-process and without I/O: each test feeds
``decide`` a request and the answers to the steps it asks for, and reads the decision. What
the adapters do with a decision over a socket is the real-server tests' (tests/security/,
tests/test_gate_identity.py)."""

from __future__ import annotations

import base64
import json

import flask
import mlflow
import pytest

from mlflow_hokusai import _mlflow
from mlflow_hokusai.auth.authenticator import AuthFailure, Identity
from mlflow_hokusai.auth.rate_limits import Verdict
from mlflow_hokusai.auth.scopes import ReadScope
from mlflow_hokusai.config import Settings
from mlflow_hokusai.errors import HokusaiError
from mlflow_hokusai.gate import json_errors
from mlflow_hokusai.gate.decision import (
    Authenticate,
    CountRequest,
    Gatekeeper,
    Request,
    run_steps,
)
from mlflow_hokusai.keys.resource_limits import parse_limits
from mlflow_hokusai.routes.services import Services

KEY = "hk_live_" + "A" * 40
GET_RUN = "/api/2.0/mlflow/runs/get"
CREATE_RUN = "/api/2.0/mlflow/runs/create"
DOWN = HokusaiError("TEMPORARILY_UNAVAILABLE", "the key database is down", 503)


def _app() -> flask.Flask:
    """Three of MLflow's routes, enough for the route tables to resolve."""
    app = flask.Flask("routes")
    for root in ("api", "ajax-api"):
        app.add_url_rule(f"/{root}/2.0/mlflow/runs/get", f"get{root}", methods=["GET"])
        app.add_url_rule(f"/{root}/2.0/mlflow/runs/create", f"create{root}", methods=["POST"])
    app.add_url_rule("/api/2.0/mlflow/somewhere-else", "elsewhere", methods=["GET"])
    return app


@pytest.fixture(scope="module")
def keeper() -> Gatekeeper:
    services = Services(
        settings=Settings(url_prefix="/api/mlflow", trusted_proxies=("10.0.0.0/8",)),
        key_store=None,
        cache=None,
        authenticator=None,  # decide asks for identities; it never looks them up itself
        audit=None,
        keys=None,
        native_routes=_mlflow.NativeRoutes(),
        read_scope=ReadScope(_app()),
        static_prefix="",
        rate_limits=None,
    )
    return Gatekeeper(services)


def _request(path, method="GET", headers=None, client="127.0.0.1", **kw) -> Request:
    headers = {k.lower(): v for k, v in (headers or {"Authorization": f"Bearer {KEY}"}).items()}

    def get_all(name):
        value = headers.get(name.lower())
        return [] if value is None else [value]

    return Request(method=method, seen=path, path=path, headers=get_all, client=client, **kw)


def _identity(**kw) -> Identity:
    fields = dict(username="alice", is_admin=False, key_id="k1", scope="write", key_prefix="hk1")
    return Identity(**{**fields, **kw})


def _walk(keeper, request, *answers):
    """Decide ``request``, answering its steps with ``answers`` in order (an exception is
    thrown in): (the steps asked, the decision)."""
    steps = keeper.decide(request)
    asked, reply, error = [], None, None
    replies = iter(answers)
    while True:
        try:
            step = steps.throw(error) if error is not None else steps.send(reply)
        except StopIteration as stop:
            return asked, stop.value
        asked.append(step)
        reply, error = next(replies), None
        if isinstance(reply, Exception):
            reply, error = None, reply


def test_the_prefix_alone_redirects_to_its_slash(keeper):
    asked, decision = _walk(keeper, _request("/api/mlflow", query="a=1"))
    assert asked == []
    assert decision.response[0] == 308
    assert ("Location", "/api/mlflow/?a=1") in decision.response[1]


@pytest.mark.parametrize("path", ["/health", "/api/mlflow/health", "/static-files/app.js"])
def test_public_paths_ask_for_no_credential(keeper, path):
    asked, decision = _walk(keeper, _request(path, headers={}))
    assert asked == []
    assert decision.response is None and decision.identity is None
    assert decision.outcome is None and decision.audit is None


def test_the_gate_answers_version_itself(keeper):
    _, decision = _walk(keeper, _request("/api/mlflow/version", headers={}))
    assert decision.response[0] == 200
    assert decision.response[2] == mlflow.__version__.encode()


@pytest.mark.parametrize("path", ["/api/mlflow/..%2Fhealth", "//health", "/health/..", "/health;x"])
def test_path_tricks_are_not_public(keeper, path):
    asked, _ = _walk(keeper, _request(path), AuthFailure("no", "missing"))
    assert len(asked) == 1 and isinstance(asked[0], Authenticate)


def test_a_protected_path_asks_who_the_credential_is(keeper):
    failure = AuthFailure("This API key was revoked.", "revoked", key_id="k1", username="alice")
    asked, decision = _walk(keeper, _request("/api/mlflow" + GET_RUN), failure)
    assert asked[0].credential.kind == "key" and asked[0].credential.key == KEY
    assert asked[0].peer == "127.0.0.1"
    assert decision.response[0] == 401
    assert decision.outcome == "unauthenticated"
    assert decision.audit == ("failed_login", (failure, "127.0.0.1"))


def test_a_known_key_from_a_wrong_address_is_forbidden(keeper):
    failure = AuthFailure("not from here", "ip-not-allowed", key_id="k1")
    _, decision = _walk(keeper, _request(GET_RUN), failure)
    assert decision.response[0] == 403 and decision.outcome == "forbidden_ip"


def test_the_database_down_is_a_503_and_nothing_else_is_asked(keeper):
    asked, decision = _walk(keeper, _request(GET_RUN), DOWN)
    assert len(asked) == 1
    assert decision.response[0] == 503 and decision.outcome == "unavailable"
    assert decision.identity is None


def test_a_write_key_is_admitted_at_the_canonical_path(keeper):
    identity = _identity()
    asked, decision = _walk(keeper, _request("/api/mlflow" + CREATE_RUN, "POST"), identity)
    assert len(asked) == 1  # no rate limit: nothing counted
    assert decision.response is None
    assert decision.path == CREATE_RUN and decision.swap == ("/api/mlflow", "")
    assert decision.identity is identity and decision.outcome == "ok"
    assert decision.notes is None and decision.authorization is None


def test_a_read_only_key_is_refused_a_write_and_the_refusal_audited(keeper):
    identity = _identity(scope="read")
    _, decision = _walk(keeper, _request(CREATE_RUN, "POST"), identity)
    assert decision.response[0] == 403
    assert b"read-only" in decision.response[2]
    assert decision.outcome == "forbidden_scope"
    assert decision.audit == ("read_only_refusal", (identity, f"POST {CREATE_RUN}", "127.0.0.1"))
    _, decision = _walk(keeper, _request(GET_RUN), identity)
    assert decision.response is None


def test_a_rate_limited_key_is_counted_and_refused_over_its_limit(keeper):
    identity = _identity(rate_limit="2/minute", counter_id="lineage-1")
    over = Verdict(allowed=False, limit=2, remaining=0, reset=30, policy="2/minute")
    asked, decision = _walk(keeper, _request(GET_RUN), identity, over)
    assert asked[1] == CountRequest("lineage-1", "2/minute")
    status, headers, _ = decision.response
    assert status == 429 and ("Retry-After", "30") in headers
    assert decision.outcome == "rate_limited"
    assert decision.audit == ("rate_limited", (identity, over, "127.0.0.1"))


def test_an_allowed_count_adds_the_rate_limit_headers(keeper):
    identity = _identity(rate_limit="2/minute", counter_id="k1")
    room = Verdict(allowed=True, limit=2, remaining=1, reset=30, policy="2/minute")
    _, decision = _walk(keeper, _request(GET_RUN), identity, room)
    assert decision.response is None and ("RateLimit-Remaining", "1") in decision.headers
    _, decision = _walk(keeper, _request(GET_RUN), identity, None)  # the store fails open
    assert decision.response is None and decision.headers == ()
    _, decision = _walk(keeper, _request(GET_RUN), identity, DOWN)
    assert decision.response[0] == 503 and decision.outcome == "unavailable"


def test_basic_credentials_reach_mlflow_as_the_authenticated_name_only(keeper):
    basic = "Basic " + base64.b64encode(f"mallory:{KEY}".encode()).decode()
    _, decision = _walk(keeper, _request(GET_RUN, headers={"Authorization": basic}), _identity())
    assert decision.authorization == "Basic " + base64.b64encode(b"alice:").decode()


def test_a_resource_limited_key_gets_notes_and_is_refused_other_routes(keeper):
    limits = parse_limits(experiments=["name:mine"])
    identity = _identity(limits=limits)
    _, decision = _walk(keeper, _request(GET_RUN), identity)
    assert decision.response is None and decision.notes is not None
    _, decision = _walk(keeper, _request("/api/2.0/mlflow/somewhere-else"), identity)
    assert decision.response[0] == 403 and decision.audit[0] == "limited_refusal"


def test_the_address_behind_a_trusted_proxy_is_the_peer(keeper):
    request = _request(GET_RUN, client="10.1.2.3", headers={"X-Forwarded-For": "127.0.0.9"})
    asked, _ = _walk(keeper, request, AuthFailure("no", "missing"))
    assert asked[0].peer == "127.0.0.9"
    request = _request(GET_RUN, client="127.0.0.1", headers={"X-Forwarded-For": "127.0.0.9"})
    asked, _ = _walk(keeper, request, AuthFailure("no", "missing"))
    assert asked[0].peer == "127.0.0.1"  # an untrusted peer cannot claim another address


def test_run_steps_answers_in_line_and_throws_failures_in(keeper):
    identity = _identity(rate_limit="5/second", counter_id="k1")
    room = Verdict(allowed=True, limit=5, remaining=4, reset=1, policy="5/second")
    answers = {Authenticate: identity, CountRequest: room}
    decision = run_steps(keeper.decide(_request(GET_RUN)), lambda step: answers[type(step)])
    assert decision.identity is identity and decision.headers

    def down(step):
        raise HokusaiError("TEMPORARILY_UNAVAILABLE", "down", 503)

    decision = run_steps(keeper.decide(_request(GET_RUN)), down)
    assert decision.response[0] == 503


# -- paths no route serves (issue 26: a wrong tracking URI is a 404, not a permission problem)


@pytest.mark.parametrize(
    "path, extra",
    [
        ("/mlflow" + GET_RUN, "/mlflow"),  # MLFLOW_TRACKING_URI=http://host/mlflow
        ("/api" + GET_RUN, "/api"),
        ("/api/mlflow/api/2.0" + GET_RUN, "/api/2.0"),
        ("/api/2.0/mlflow/runs/nothing-here", None),
    ],
)
@pytest.mark.parametrize("admin, scope", [(True, "write"), (False, "write"), (False, "read")])
def test_an_unserved_path_is_a_json_404_with_the_roots_for_everyone(
    keeper, path, extra, admin, scope
):
    identity = _identity(is_admin=admin, scope=scope)
    _, decision = _walk(keeper, _request(path), identity)
    status, headers, body = decision.response
    assert status == 404 and ("Content-Type", "application/json") in headers
    error = json.loads(body)
    assert error["error_code"] == "ENDPOINT_NOT_FOUND"
    assert "at / and at /api/mlflow/" in error["message"], error["message"]
    if extra is None:
        assert "probably" not in error["message"]
    else:
        assert f"ends in an extra '{extra}': remove it" in error["message"], error["message"]
    assert decision.audit is None and decision.identity is None


def test_an_unserved_path_asks_for_a_credential_first(keeper):
    asked, decision = _walk(
        keeper, _request("/mlflow" + GET_RUN, headers={}), AuthFailure("no credential", "missing")
    )
    assert len(asked) == 1 and decision.response[0] == 401


def test_a_method_a_route_does_not_take_is_a_json_405(keeper):
    _, decision = _walk(keeper, _request(GET_RUN, "DELETE"), _identity())
    status, headers, body = decision.response
    assert status == 405 and ("Allow", "GET, HEAD, OPTIONS") in headers
    assert json.loads(body)["error_code"] == "METHOD_NOT_ALLOWED"


def test_a_browser_on_an_unknown_page_keeps_mlflows_answer(keeper):
    request = _request(
        "/no-such-page", headers={"Authorization": f"Bearer {KEY}", "Accept": "text/html,*/*"}
    )
    _, decision = _walk(keeper, request, _identity())
    assert decision.response is None


def test_html_404s_become_json_for_api_clients_only():
    html = [("Content-Type", "text/html; charset=utf-8")]
    assert json_errors._needs_rewrite(404, html, html_ok=False)
    assert not json_errors._needs_rewrite(404, html, html_ok=True)
    assert not json_errors._needs_rewrite(404, [("Content-Type", "application/json")], False)
    status, _, body = json_errors._rewritten(404, html, b"<html>Not Found</html>")
    assert status == 404 and json.loads(body)["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    status, headers, body = json_errors._rewritten(405, [*html, ("Allow", "GET")], b"<html/>")
    assert status == 405 and ("Allow", "GET") in headers and b"<" not in body
