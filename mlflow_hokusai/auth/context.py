"""Handing the identity the gate computed to everything after it, as Starlette's
``scope["user"]`` does: the gate authenticates once per request and later code reads it.

- under ASGI (uvicorn) the gate sets a ``ContextVar`` around the call into the app; MLflow's
  FastAPI-native routes run in the same task and its Flask app in a thread that inherits the
  context (anyio copies it), so both see it. The token from ``set`` resets it afterwards;
- under WSGI (gunicorn, waitress) the gate puts it in the environ under ``ENVIRON_KEY``.

A request that did not pass the gate (none in a running server; Flask test clients) has no
identity here, and ``flask_auth.authorize`` authenticates it itself.
"""

from __future__ import annotations

from contextvars import ContextVar, Token

from mlflow_hokusai.auth.authenticator import Identity

ENVIRON_KEY = "hokusai.identity"
_identity: ContextVar[Identity | None] = ContextVar("hokusai_identity", default=None)


def set_identity(identity: Identity) -> Token:
    return _identity.set(identity)


def reset_identity(token: Token) -> None:
    _identity.reset(token)


def gate_identity(environ) -> Identity | None:
    """The identity the gate established for this request (``environ``: the WSGI environ)."""
    identity = environ.get(ENVIRON_KEY)
    if isinstance(identity, Identity):
        return identity
    return _identity.get()
