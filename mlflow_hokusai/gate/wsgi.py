"""The gate under a WSGI server (gunicorn, waitress): the same decision (``decision.py``),
every step answered in line. The identity goes in the environ (``auth/context.py``)."""

from __future__ import annotations

from mlflow_hokusai.auth import resource_limits
from mlflow_hokusai.auth.context import ENVIRON_KEY
from mlflow_hokusai.gate.decision import Decision, Gatekeeper, Request, run_steps, wants_html
from mlflow_hokusai.gate.json_errors import wsgi_call, wsgi_send
from mlflow_hokusai.gate.paths import swapped


class WsgiGate(Gatekeeper):
    def __init__(self, app, services):
        super().__init__(services)
        self.app = app

    def __call__(self, environ, start_response):
        request = _request(environ)
        decision = run_steps(self.decide(request), self.answer)
        self.record(decision)
        if decision.response is not None:
            return wsgi_send(start_response, decision.response)
        environ = _rewritten_environ(environ, decision)
        if decision.headers:
            start_response = _with_headers(start_response, decision.headers)
        token = resource_limits.enter(decision.notes)
        try:
            html = wants_html(request.headers)
            return wsgi_call(self.app, environ, start_response, self.forbidden(decision), html)
        finally:
            resource_limits.leave(token)


def _request(environ) -> Request:
    path = environ.get("PATH_INFO", "")
    raw = (environ.get("RAW_URI") or environ.get("REQUEST_URI") or "").split("?", 1)[0]

    def get_all(name: str) -> list[str]:
        value = environ.get("HTTP_" + name.upper().replace("-", "_"))
        return [] if value is None else [value]

    return Request(
        method=environ.get("REQUEST_METHOD", "GET"),
        seen=raw if raw.startswith("/") else path,
        path=path,
        headers=get_all,
        client=environ.get("REMOTE_ADDR"),
        query=environ.get("QUERY_STRING", ""),
    )


def _rewritten_environ(environ, decision: Decision):
    """The environ the app sees: the canonical path, the identity, MLflow's view of Basic
    credentials."""
    environ = dict(environ, PATH_INFO=decision.path) if decision.swap else environ
    for key in ("RAW_URI", "REQUEST_URI"):  # gunicorn, some others
        if decision.swap and key in environ:
            environ[key] = swapped(environ[key], decision.swap)
    environ[ENVIRON_KEY] = decision.identity
    if decision.authorization is not None:
        environ["HTTP_AUTHORIZATION"] = decision.authorization
    return environ


def _with_headers(start_response, extra):
    def wrapped(status, headers, exc_info=None):
        return start_response(status, [*headers, *extra], exc_info)

    return wrapped
