"""The gate's one decision, shared by the ASGI and the WSGI adapter and free of I/O.

``Gatekeeper.decide(request)`` walks the pipeline — prefix mapping, the public allowlist, the
credential, the identity, the read scope, resource and workspace limits, the rate limit — and
returns a ``Decision``. Where the pipeline needs what only I/O can tell (who a credential
belongs to; whether a key's rate limit has room), ``decide`` *yields* a step
(``Authenticate``, ``CountRequest``) and the adapter sends back the answer, or throws the
``HokusaiError`` the lookup raised: under uvicorn an answer already in memory comes on the event
loop and a lookup goes to a worker thread; under WSGI every answer is fetched in line
(``run_steps``). A decision's side effects (the metric, the audit record) are data in the
decision, applied by ``Gatekeeper.record``, so tests drive ``decide`` in-process with answers of
their choosing (``tests/test_gate_decision.py``).

A new credential (a session cookie) is a new ``Credential`` kind parsed by
``auth.credentials.from_headers`` and resolved by the authenticator behind ``Authenticate``;
what it may do differently is decided here (``sessions.py``): the sign-in routes, a browser's
redirect to sign in, and no state-changing request with a session from another origin.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Generator
from dataclasses import dataclass, field, replace

from mlflow_hokusai.auth import resource_limits
from mlflow_hokusai.auth.addresses import ClientAddress
from mlflow_hokusai.auth.authenticator import AuthFailure, Identity
from mlflow_hokusai.auth.credentials import Credential, from_headers
from mlflow_hokusai.errors import HokusaiError, error_parts, parts_of
from mlflow_hokusai.gate import sessions
from mlflow_hokusai.gate.paths import (
    Parts,
    PathRules,
    not_found_message,
    slash_redirect,
    too_large_answer,
)

_OUTCOMES = {"rate-limited": "rate_limited", "ip-not-allowed": "forbidden_ip"}
_READS = ("GET", "HEAD")


@dataclass(frozen=True)
class Request:
    """The facts of one request, as either server gives them."""

    method: str
    seen: str  # the path as the client sent it (undecoded)
    path: str  # the server's decoded path
    headers: Callable[[str], list[str]]  # every value of a header name (case-insensitive)
    client: str | None = None  # the socket peer's address
    query: str = ""
    websocket: bool = False


@dataclass(frozen=True)
class Authenticate:
    """Step: who is ``credential``, sent from ``peer``? Answer: ``Identity`` or
    ``AuthFailure``; throws ``HokusaiError`` when the key database cannot be reached."""

    credential: Credential
    peer: str | None


@dataclass(frozen=True)
class CountRequest:
    """Step: count one request against a key's rate limit. Answer: the ``Verdict``, or None
    when the counter store is down and the server fails open; throws ``HokusaiError`` when it
    fails closed."""

    counter_id: str
    rate: str


@dataclass(frozen=True)
class Decision:
    """What to do with a request. ``response`` set: the gate answers it itself. Otherwise the
    app gets it at ``path`` (with the prefix ``swap`` applied to the raw target), with
    ``identity`` (None on a public path), ``notes`` (a resource-limited key's), extra response
    ``headers`` (``RateLimit-*``) and, when the client sent Basic credentials, the
    ``authorization`` header MLflow sees instead (the user's name, no secret)."""

    path: str
    swap: tuple[str, str] | None = None
    response: Parts | None = None
    identity: Identity | None = None
    notes: resource_limits.LimitNotes | None = None
    headers: tuple[tuple[str, str], ...] = ()
    authorization: str | None = None
    peer: str | None = None
    outcome: str | None = None  # the request metric's label
    audit: tuple[str, tuple] | None = None  # (AuditLog method, its arguments)
    max_body: int | None = None  # a public route's body limit: the adapter reads no more
    request_line: str = field(default="", compare=False)


Steps = Generator["Authenticate | CountRequest", object, Decision]


def basic_authorization(identity) -> str:
    """The ``Authorization`` header MLflow sees after a Basic login: the authenticated user
    name and no secret. MLflow's handlers read the Basic user name (e.g. to label a job), and
    it must be the authenticated one, not what the client typed beside a key."""
    user = base64.b64encode(f"{identity.username}:".encode()).decode("ascii")
    return f"Basic {user}"


class Gatekeeper:
    """The decision and its effects for one server (``services``: ``routes.services``)."""

    def __init__(self, services):
        self.authenticator = services.authenticator
        self.read_scope = services.read_scope
        self.audit = services.audit
        self.metrics = services.metrics
        self.rate_limits = services.rate_limits
        self.addresses = ClientAddress(services.settings.trusted_proxies)
        self.sign_in_on = services.settings.oidc_issuer is not None
        self.limited_routes = resource_limits.LimitedRoutes(services.read_scope)
        native = services.native_routes
        self.paths = PathRules(
            services.settings.url_prefix,
            services.static_prefix,
            lambda rest, method: native.match(rest, method) is not None,
        )

    def decide(self, request: Request) -> Steps:
        method = request.method
        if not request.websocket and self.paths.wants_slash(request.seen, method):
            return Decision(request.path, response=slash_redirect(request.seen, request.query))
        path, swap = self.paths.canonical(request.path, request.seen, method)
        if self.sign_in_on and sessions.is_sign_in_route(path, self.paths.static_prefix):
            # Public (the way in), and reached under the path the browser used, so the routes
            # know the base to send it back to.
            return Decision(request.path)
        if self.paths.is_public(path):
            limit = self.paths.body_limit(path)
            answer = self.paths.public_answer(path, method)
            if limit is not None and answer is None:
                answer = too_large_answer(limit, request.headers("Content-Length"))
            return Decision(path, swap, response=answer, max_body=limit)
        peer = self.addresses.of(request.client, request.headers("X-Forwarded-For"))
        admitted = Decision(path, swap, peer=peer, request_line=f"{method} {path}")
        credential = from_headers(request.headers)
        try:
            result = yield Authenticate(credential, peer)
        except HokusaiError as error:  # the key database is unreachable: 503, fail closed
            return _refused(admitted, parts_of(error), "unavailable")
        refusal = self._browser_refusal(admitted, request, credential, result, swap)
        if refusal is not None:
            return refusal
        # A resource-limited key's notes: what its checks find out, here and inside MLflow.
        notes = None
        if not isinstance(result, AuthFailure) and result.limits.limited:
            notes = resource_limits.LimitNotes()
        refusal = self._refusal(admitted, result, request, notes)
        if refusal is not None:
            return refusal
        admitted = replace(admitted, identity=result, notes=notes, outcome="ok")
        if any(v[:6].lower() == "basic " for v in request.headers("Authorization")):
            admitted = replace(admitted, authorization=basic_authorization(result))
        if result.rate_limit is None:
            return admitted
        try:
            verdict = yield CountRequest(result.counter_id, result.rate_limit)
        except HokusaiError as error:  # the store is down and the server fails closed
            return _refused(admitted, parts_of(error), "unavailable")
        return self._counted(admitted, verdict)

    def _browser_refusal(self, admitted, request, credential, result, swap) -> Decision | None:
        """Sign-in's part (``sessions.py``): a browser without a usable credential sent to sign
        in, a session's refusals; None when it has nothing to say."""
        if isinstance(result, AuthFailure) and self.sign_in_on:
            redirect = sessions.sign_in_redirect(request, result, swap, self.paths.static_prefix)
            if redirect is not None:
                return _refused(admitted, redirect, "unauthenticated")
        if credential.kind == "session" or (self.sign_in_on and credential.kind == "none"):
            refusal = sessions.refusal(request, result)
            if refusal is not None:
                return _refused(admitted, refusal, _session_outcome(result))
        return None

    def _refusal(self, admitted: Decision, result, request: Request, notes) -> Decision | None:
        """The refusal of an authentication ``result`` before any counting, else None."""
        line, peer = admitted.request_line, admitted.peer
        if isinstance(result, AuthFailure):
            parts = error_parts(result.error_code, result.message, retry_after=result.retry_after)
            outcome = _OUTCOMES.get(result.reason, "unauthenticated")
            return _refused(admitted, parts, outcome, ("failed_login", (result, peer)))
        unserved = self._unserved(admitted.path, request)
        if unserved is not None and (result.scope == "write" or request.method in _READS):
            return _refused(admitted, unserved, "ok")  # a 404 or 405 after authentication only
        message = self.read_scope.refusal(result, admitted.path, request.method)
        if message is not None:  # a read-only key's write is refused (and audited) as ever
            audit = ("read_only_refusal", (result, line, peer))
            return _refused(admitted, _forbidden(message), "forbidden_scope", audit)
        message = self._limits_refusal(result, admitted.path, request, notes)
        if message is not None:
            audit = ("limited_refusal", (result, line, peer))
            return _refused(admitted, _forbidden(message), "forbidden_scope", audit)
        return None

    def _unserved(self, path: str, request: Request) -> Parts | None:
        """For an API request no route serves: our 404 JSON (naming the two roots and what
        the client probably meant) or, when routes serve the path with other methods, a 405;
        else None. Browsers (``Accept: text/html``) and CORS preflights keep MLflow's
        answers (the UI's own pages). A HEAD is answered as its GET (MLflow serves it so)."""
        method = "GET" if request.method == "HEAD" else request.method
        if request.websocket or method == "OPTIONS" or wants_html(request.headers):
            return None
        methods = self.read_scope.other_methods(path, method)
        if methods is None:
            return None
        if methods:
            allowed = ", ".join(sorted(methods | ({"HEAD"} if "GET" in methods else set())))
            status, headers, body = error_parts(
                "METHOD_NOT_ALLOWED", f"{method} is not allowed on {path}: use {allowed}.", 405
            )
            return status, [*headers, ("Allow", allowed)], body
        message = not_found_message(
            method,
            request.path,
            self.paths.url_prefix,
            self.paths.static_prefix,
            lambda other: self.read_scope.other_methods(other, method) != frozenset(),
        )
        return error_parts("ENDPOINT_NOT_FOUND", message, 404)

    def _limits_refusal(self, identity, path: str, request: Request, notes) -> str | None:
        """For a key with resource or workspace limits: the 403 message, or None."""
        limits = identity.limits
        message = None
        if limits.workspace is not None and not self.limited_routes.is_free(path, request.method):
            workspace = next(iter(request.headers("X-MLflow-Workspace")), None)
            message = resource_limits.workspace_refusal(identity, workspace)
        if message is None and limits.limited:
            message = self.limited_routes.refusal(identity, path, request.method, notes)
        return message

    def _counted(self, admitted: Decision, verdict) -> Decision:
        """After the rate-limit count: the decision with ``RateLimit-*`` headers, or a 429."""
        if verdict is None:  # the counter store is down and the server fails open
            return admitted
        if verdict.allowed:
            return replace(admitted, headers=tuple(verdict.headers()))
        identity = admitted.identity
        status, headers, body = error_parts(
            "REQUEST_LIMIT_EXCEEDED", verdict.message(identity.key_prefix)
        )
        audit = ("rate_limited", (identity, verdict, admitted.peer))
        parts = (status, headers + list(verdict.headers()), body)
        return _refused(admitted, parts, "rate_limited", audit)

    # -- what the adapters call --------------------------------------------------------------

    def peek(self, step):
        """The answer to ``step`` if it needs no I/O, else None."""
        if isinstance(step, Authenticate):
            return self.authenticator.peek(step.credential, step.peer)
        return self.rate_limits.peek(step.counter_id, step.rate)

    def answer(self, step):
        """The answer to ``step`` (may block on the key database or the counter store)."""
        if isinstance(step, Authenticate):
            return self.authenticator.resolve(step.credential, step.peer)
        return self.rate_limits.check(step.counter_id, step.rate)

    def record(self, decision: Decision) -> None:
        """Apply a decision's effects: the request metric and the audit record (queued, off
        the request's path)."""
        if decision.outcome is not None:
            self.metrics.request(decision.outcome)
        if decision.audit is not None:
            name, arguments = decision.audit
            getattr(self.audit, name)(*arguments)

    def forbidden(self, decision: Decision):
        """For the JSON error rewriting: a function giving the message of a 403 MLflow's
        engine gave a limited key when the key's limits (not its owner's rights) took the
        permission away, else None; None when the key has no resource limits."""
        notes = decision.notes
        if notes is None:
            return None

        def message():
            if not notes.lowered:
                return None
            self.audit.limited_refusal(decision.identity, decision.request_line, decision.peer)
            return resource_limits.denial_message(decision.identity)

        return message


def run_steps(steps: Steps, answer: Callable[[object], object]) -> Decision:
    """Drive ``decide`` to its decision, answering each step in line with ``answer``."""
    reply, error = None, None
    while True:
        try:
            step = steps.throw(error) if error is not None else steps.send(reply)
        except StopIteration as stop:
            return stop.value
        reply, error = None, None
        try:
            reply = answer(step)
        except HokusaiError as failure:
            error = failure


def wants_html(headers: Callable[[str], list[str]]) -> bool:
    """True when the client is a browser asking for a page (``Accept`` names text/html)."""
    return any("text/html" in value.lower() for value in headers("Accept"))


def _session_outcome(result) -> str:
    return "unauthenticated" if isinstance(result, AuthFailure) else "forbidden_scope"


def _forbidden(message: str) -> Parts:
    return error_parts("PERMISSION_DENIED", message)


def _refused(admitted: Decision, parts: Parts, outcome: str, audit=None) -> Decision:
    return replace(admitted, response=parts, outcome=outcome, audit=audit, identity=None)
