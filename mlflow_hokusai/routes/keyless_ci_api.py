"""REST endpoints for keyless CI: federation policies (admins) and the token exchange.

- ``POST …/mlflow/hokusai/federation/policies/create``, ``GET …/policies/list``,
  ``GET …/policies/get?policy_id=``, ``POST …/policies/delete``: thin views over
  ``keys/trust_policies.py``'s ``TrustPolicyManager`` (every rule and the audit trail are there);
- ``POST …/mlflow/hokusai/token-exchange``: public (the workload's OIDC token is the
  credential), RFC 8693 parameters as a form or a JSON object; ``auth/token_exchange.py`` decides.
"""

from __future__ import annotations

from flask import Flask, jsonify, request

from mlflow_hokusai import _mlflow
from mlflow_hokusai.auth.addresses import ClientAddress
from mlflow_hokusai.auth.flask_auth import current_identity
from mlflow_hokusai.auth.token_exchange import TokenExchange
from mlflow_hokusai.errors import invalid_parameter
from mlflow_hokusai.keys.management import Actor
from mlflow_hokusai.routes.api import Route, json_body, register
from mlflow_hokusai.routes.services import Services, services

BASE = "/mlflow/hokusai/federation/policies"
EXCHANGE = "/mlflow/hokusai/token-exchange"
POLICY_FIELDS = {
    "issuer",
    "audience",
    "subject",
    "username",
    "scope",
    "lifetime_seconds",
    "claims",
    "rate_limit",
    "allowed_ips",
}
EXCHANGE_FIELDS = {
    "grant_type",
    "subject_token",
    "subject_token_type",
    "audience",
    "resource",
    "scope",
    "requested_token_type",
}


def _actor() -> Actor:
    return Actor.from_identity(current_identity(), request.remote_addr)


def create_policy():
    body = json_body(POLICY_FIELDS)
    policy = services().trust_policies.create(_actor(), **{k: body.get(k) for k in POLICY_FIELDS})
    return jsonify({"policy": policy.to_dict()})


def list_policies():
    return jsonify({"policies": [p.to_dict() for p in services().trust_policies.list(_actor())]})


def get_policy():
    policy = services().trust_policies.get(_actor(), request.args.get("policy_id"))
    return jsonify({"policy": policy.to_dict()})


def delete_policy():
    body = json_body({"policy_id"})
    policy = services().trust_policies.delete(_actor(), body.get("policy_id"))
    return jsonify({"policy": policy.to_dict()})


def _exchange_parameters() -> dict:
    if request.mimetype == "application/x-www-form-urlencoded":
        unknown = sorted(set(request.form) - EXCHANGE_FIELDS)
        if unknown:
            raise invalid_parameter(f"Unknown parameter(s) {', '.join(map(repr, unknown))}.")
        return {name: request.form.get(name) for name in request.form}
    return json_body(EXCHANGE_FIELDS)


def make_exchange_view(exchange: TokenExchange, addresses: ClientAddress):
    def token_exchange():
        source = addresses.of(request.remote_addr, request.headers.getlist("X-Forwarded-For"))
        answer = exchange.exchange(_exchange_parameters(), source)
        response = jsonify(answer)
        response.headers["Cache-Control"] = "no-store"  # RFC 6749 5.1: a token response
        return response

    return token_exchange


ROUTES = [
    Route(f"{BASE}/create", "POST", create_policy),
    Route(f"{BASE}/list", "GET", list_policies),
    Route(f"{BASE}/get", "GET", get_policy),
    Route(f"{BASE}/delete", "POST", delete_policy),
]


def install(app: Flask, services: Services) -> None:
    register(app, services, ROUTES)
    view = make_exchange_view(
        services.token_exchange, ClientAddress(services.settings.trusted_proxies)
    )
    for path in services.api_paths(EXCHANGE):
        app.add_url_rule(path, endpoint=f"hokusai:{path}", view_func=view, methods=["POST"])
    # The gate lets exactly these paths through without a key; MLflow's engine must too.
    _mlflow.patches.make_public([f"/{root}/2.0{EXCHANGE}" for root in ("api", "ajax-api")])
