"""The gate under uvicorn: an ASGI middleware around the whole app (``decision.py`` decides).

When every answer the decision needs is already in memory it is decided on the event loop (a
thread hop costs more than the checks); otherwise in one worker thread hop. The identity and
the request's resource-limit notes are set for every request, None included: a value must
never come from an earlier request (the context MLflow's Flask app runs in can outlive a
request on a kept-alive connection; tests/security/test_findings_22.py shows it).
"""

from __future__ import annotations

import anyio

from mlflow_hokusai.auth import resource_limits
from mlflow_hokusai.auth.cache import clean_request
from mlflow_hokusai.auth.context import reset_identity, set_identity
from mlflow_hokusai.errors import body_too_large, parts_of
from mlflow_hokusai.gate.decision import Decision, Gatekeeper, Request, run_steps, wants_html
from mlflow_hokusai.gate.json_errors import asgi_send, send_parts
from mlflow_hokusai.gate.paths import swapped


class AsgiGate(Gatekeeper):
    def __init__(self, app, services):
        super().__init__(services)
        self.app = app
        self._shutdown = services.shutdown

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self.app(scope, self._watched(receive), send)
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        request = _request(scope)
        decision = await self._decide(request)
        self.record(decision)
        if decision.response is not None:
            if scope["type"] == "websocket":
                return await send({"type": "websocket.close", "code": 1008})
            return await send_parts(send, *decision.response)
        if decision.max_body is not None and scope["type"] == "http":
            body = await _read_at_most(receive, decision.max_body)
            if body is None:
                return await send_parts(send, *parts_of(body_too_large(decision.max_body)))
            scope, receive = _with_body(scope, body, receive)
        scope = _rewritten_scope(scope, decision)
        if decision.headers:
            send = _with_headers(send, decision.headers)
        html = wants_html(request.headers)
        identity_token = set_identity(decision.identity)
        notes_token = resource_limits.enter(decision.notes)
        try:
            with clean_request():
                await self.app(scope, receive, asgi_send(send, self.forbidden(decision), html))
        finally:
            resource_limits.leave(notes_token)
            reset_identity(identity_token)

    async def _decide(self, request: Request) -> Decision:
        """The decision, on the event loop when every answer is in memory; else decided again
        (deciding has no effects) in a worker thread, where lookups may block, with the
        answers already found reused."""
        found = []

        def in_memory(step):
            reply = self.peek(step)
            if reply is None:
                raise _NeedsLookup
            found.append(reply)
            return reply

        try:
            return run_steps(self.decide(request), in_memory)
        except _NeedsLookup:
            known = iter(found)
            return await anyio.to_thread.run_sync(
                lambda: run_steps(
                    self.decide(request), lambda step: next(known, None) or self.answer(step)
                )
            )

    def _watched(self, receive):
        """``receive`` of the lifespan: at its shutdown (after the last request, before
        uvicorn ends the process) our services stop first, in a worker thread."""

        async def watched():
            message = await receive()
            if message.get("type") == "lifespan.shutdown":
                await anyio.to_thread.run_sync(self._shutdown)
            return message

        return watched


async def _read_at_most(receive, limit: int) -> bytes | None:
    """The request body, or None as soon as it is longer than ``limit`` bytes (the rest is
    never read)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _with_body(scope, body: bytes, receive):
    """The scope and a ``receive`` that hand the app ``body``, read already, with its
    ``Content-Length`` (a body sent in chunks has none, and the WSGI app would see nothing)."""
    headers = [
        (k, v)
        for k, v in scope["headers"]
        if k.lower() not in (b"content-length", b"transfer-encoding")
    ]
    scope = dict(scope, headers=[*headers, (b"content-length", str(len(body)).encode())])
    sent = False

    async def replay():
        nonlocal sent
        if sent:
            return await receive()  # after the body: wait for the client to go away
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return scope, replay


class _NeedsLookup(Exception):
    """A step's answer is not in memory."""


def _request(scope) -> Request:
    headers = scope.get("headers") or []

    def get_all(name: str) -> list[str]:
        wanted = name.lower().encode()
        return [v.decode("latin-1") for k, v in headers if k.lower() == wanted]

    raw = scope.get("raw_path")
    client = scope.get("client")
    return Request(
        method=scope.get("method", "GET"),
        # Match the bytes the client sent: a percent-encoded prefix is not the prefix.
        seen=raw.decode("latin-1") if raw else scope["path"],
        path=scope["path"],
        headers=get_all,
        client=client[0] if client else None,
        query=(scope.get("query_string") or b"").decode("latin-1"),
        websocket=scope["type"] == "websocket",
    )


def _rewritten_scope(scope, decision: Decision):
    """The scope the app sees: the canonical path, and MLflow's view of Basic credentials."""
    if decision.path != scope["path"]:
        scope = dict(scope, path=decision.path)
        if scope.get("raw_path"):
            raw = scope["raw_path"].decode("latin-1")
            scope["raw_path"] = swapped(raw, decision.swap).encode("latin-1")
    if decision.authorization is not None:
        value = decision.authorization.encode("latin-1")
        headers = [(k, value if k.lower() == b"authorization" else v) for k, v in scope["headers"]]
        scope = dict(scope, headers=headers)
    return scope


def _with_headers(send, extra):
    """Wrap ``send`` so the response carries ``extra`` headers (str pairs)."""
    encoded = [(name.lower().encode(), value.encode()) for name, value in extra]

    async def wrapped(message):
        if message["type"] == "http.response.start":
            message = dict(message, headers=[*message.get("headers", []), *encoded])
        return await send(message)

    return wrapped
