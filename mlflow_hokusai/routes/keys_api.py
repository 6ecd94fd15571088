"""REST endpoints for API keys: create, list, revoke, rotate.

Thin: they parse JSON or query parameters, call the shared ``KeyManager`` (which holds every
rule) and shape the response. The plaintext key appears only in create and rotate responses.
Registered like ``routes/api.py``: under ``/api/2.0`` and ``/ajax-api/2.0``.
"""

from __future__ import annotations

import json
import logging

from flask import Flask, jsonify, request

from mlflow_hokusai import _mlflow
from mlflow_hokusai.auth.flask_auth import current_identity
from mlflow_hokusai.errors import HokusaiError, flask_error
from mlflow_hokusai.keys.audit import AuditLog
from mlflow_hokusai.keys.management import Actor, KeyManager
from mlflow_hokusai.routes.api import register
from mlflow_hokusai.store.audit import AuditStore

_logger = logging.getLogger(__name__)
_manager: KeyManager | None = None

BASE = "/mlflow/hokusai/api-keys"


def _actor() -> Actor:
    return Actor.from_identity(current_identity(), request.remote_addr)


def _body(allowed: set[str]) -> dict:
    raw = request.get_data(cache=True)
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise HokusaiError(
            "INVALID_PARAMETER_VALUE", "The request body is not valid JSON."
        ) from None
    if not isinstance(body, dict):
        raise HokusaiError("INVALID_PARAMETER_VALUE", "The request body must be a JSON object.")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise HokusaiError(
            "INVALID_PARAMETER_VALUE",
            f"Unknown field(s) {', '.join(map(repr, unknown))}; expected "
            f"{', '.join(map(repr, sorted(allowed)))}.",
        )
    return body


def _flag(name: str) -> bool:
    value = request.args.get(name)
    if value is None:
        return False
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0", ""):
        return False
    raise HokusaiError("INVALID_PARAMETER_VALUE", f"'{name}' must be true or false.")


def _handled(view):
    def wrapper():
        try:
            return view()
        except HokusaiError as e:
            return flask_error(e.error_code, e.message, e.status)

    wrapper.__name__ = view.__name__
    wrapper.__doc__ = view.__doc__
    return wrapper


@_handled
def create_key():
    body = _body({"name", "scope", "expires_in_days", "username"})
    key, record = _manager.create(
        _actor(),
        username=body.get("username"),
        name=body.get("name"),
        scope=body.get("scope"),
        expires_in_days=body.get("expires_in_days"),
    )
    return jsonify({"key": key, "api_key": record.to_dict()})


@_handled
def list_keys():
    unknown = sorted(set(request.args) - {"username", "all"})
    if unknown:
        raise HokusaiError(
            "INVALID_PARAMETER_VALUE",
            f"Unknown parameter(s) {', '.join(map(repr, unknown))}; expected 'username', 'all'.",
        )
    records = _manager.list(_actor(), username=request.args.get("username"), everyone=_flag("all"))
    return jsonify({"api_keys": [r.to_dict() for r in records]})


@_handled
def revoke_key():
    body = _body({"key_id"})
    record = _manager.revoke(_actor(), body.get("key_id"))
    return jsonify({"api_key": record.to_dict()})


@_handled
def rotate_key():
    body = _body({"key_id"})
    key, record, old = _manager.rotate(_actor(), body.get("key_id"))
    return jsonify({"key": key, "api_key": record.to_dict(), "replaced": old.to_dict()})


# (base path, method, view): this module's routes.
ROUTES = [
    (f"{BASE}/create", "POST", create_key),
    (f"{BASE}/list", "GET", list_keys),
    (f"{BASE}/revoke", "POST", revoke_key),
    (f"{BASE}/rotate", "POST", rotate_key),
]


def install(app: Flask, key_store, service, settings) -> AuditLog:
    """Add the key routes; return the audit log the gate also writes to."""
    global _manager
    audit = AuditLog(AuditStore(key_store.engine))
    _manager = KeyManager(
        key_store,
        _mlflow.running_user_store(),
        audit,
        environment=settings.key_environment,
        # This worker refuses a revoked key at once; the others within their cache TTL.
        on_change=service.invalidate,
        on_note=_logger.info,
    )
    register(app, ROUTES)
    return audit
