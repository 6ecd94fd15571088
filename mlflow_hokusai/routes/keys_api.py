"""REST endpoints for API keys: create, list, revoke, rotate, update (resource limits).

Thin: they parse JSON or query parameters, call the shared ``KeyManager`` (which holds every
rule) and shape the response; a ``HokusaiError`` it raises becomes JSON in the one Flask error
handler (``routes/errors.py``). The plaintext key appears only in create and rotate responses.
"""

from __future__ import annotations

from flask import Flask, has_request_context, jsonify, request

from mlflow_hokusai import _mlflow
from mlflow_hokusai.auth.flask_auth import current_identity
from mlflow_hokusai.errors import HokusaiError
from mlflow_hokusai.keys.management import Actor
from mlflow_hokusai.routes.api import Route, actor, json_body, register
from mlflow_hokusai.routes.services import Services, services

BASE = "/mlflow/hokusai/api-keys"


def _flag(name: str) -> bool:
    value = request.args.get(name)
    if value is None:
        return False
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0", ""):
        return False
    raise HokusaiError("INVALID_PARAMETER_VALUE", f"'{name}' must be true or false.")


LIMIT_FIELDS = ("experiments", "registered_models", "workspace", "can_create")


def _described(manager, record) -> dict:
    """The key as its owner (or an admin) sees it: with the addresses it was used from."""
    return manager.described(actor(), [record])[0]


def create_key():
    body = json_body(
        {"name", "scope", "expires_in_days", "username", "allowed_ips", "rate_limit"}
        | set(LIMIT_FIELDS)
    )
    manager = services().keys
    key, record = manager.create(
        actor(),
        username=body.get("username"),
        name=body.get("name"),
        scope=body.get("scope"),
        expires_in_days=body.get("expires_in_days"),
        allowed_ips=body.get("allowed_ips"),
        rate_limit=body.get("rate_limit"),
        **{field: body.get(field) for field in LIMIT_FIELDS},
    )
    return jsonify({"key": key, "api_key": _described(manager, record)})


def update_key():
    """Change a key's resource limits (the fields given; ``unlimited: true`` removes all)."""
    body = json_body({"key_id", "unlimited", *LIMIT_FIELDS})
    unlimited = body.get("unlimited", False)
    if not isinstance(unlimited, bool):
        raise HokusaiError("INVALID_PARAMETER_VALUE", "'unlimited' must be true or false.")
    manager = services().keys
    record = manager.update_limits(
        actor(),
        body.get("key_id"),
        unlimited=unlimited,
        **{field: body.get(field) for field in LIMIT_FIELDS},
    )
    return jsonify({"api_key": _described(manager, record)})


def list_keys():
    unknown = sorted(set(request.args) - {"username", "all"})
    if unknown:
        raise HokusaiError(
            "INVALID_PARAMETER_VALUE",
            f"Unknown parameter(s) {', '.join(map(repr, unknown))}; expected 'username', 'all'.",
        )
    manager = services().keys
    records = manager.list(actor(), username=request.args.get("username"), everyone=_flag("all"))
    return jsonify({"api_keys": manager.described(actor(), records)})


def revoke_key():
    body = json_body({"key_id"})
    manager = services().keys
    record = manager.revoke(actor(), body.get("key_id"))
    return jsonify({"api_key": _described(manager, record)})


def rotate_key():
    body = json_body({"key_id", "grace_seconds"})
    manager = services().keys
    key, record, old = manager.rotate(actor(), body.get("key_id"), body.get("grace_seconds"))
    new, replaced = manager.described(actor(), [record, old])
    return jsonify({"key": key, "api_key": new, "replaced": replaced})


ROUTES = [
    Route(f"{BASE}/create", "POST", create_key),
    Route(f"{BASE}/list", "GET", list_keys),
    Route(f"{BASE}/revoke", "POST", revoke_key),
    Route(f"{BASE}/rotate", "POST", rotate_key),
    Route(f"{BASE}/update", "POST", update_key),
]


def install(app: Flask, services: Services) -> None:
    """The key routes, and: a user deleted through MLflow's API loses their keys, and a user
    created under a name that had keys does not get them."""
    register(app, services, ROUTES)

    def writer() -> Actor:
        identity = current_identity() if has_request_context() else None
        if identity is None:
            return Actor("mlflow", True)
        return Actor.from_identity(identity, request.remote_addr)

    _mlflow.patches.after_user_write(
        "delete_user", lambda name: services.keys.revoke_user_keys(writer(), name, "deleted")
    )
    _mlflow.patches.after_user_write(
        "create_user", lambda name: services.keys.revoke_user_keys(writer(), name, "re-created")
    )
