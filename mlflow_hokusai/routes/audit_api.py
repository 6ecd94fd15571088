"""REST endpoint for the audit trail: ``GET …/mlflow/hokusai/audit/list``.

Thin, like the key routes: it checks the query parameters' names and hands them to
``AuditLog.events``, which holds the rules (admins see every event, anyone else the events
about their own keys) and the validation of each value.
"""

from __future__ import annotations

from flask import Flask, jsonify, request

from mlflow_hokusai.errors import invalid_parameter
from mlflow_hokusai.routes.api import Route, actor, register
from mlflow_hokusai.routes.services import Services, services

PARAMETERS = ("username", "event", "since", "key_id", "max_results", "page_token")


def list_events():
    unknown = sorted(set(request.args) - set(PARAMETERS))
    if unknown:
        raise invalid_parameter(
            f"Unknown parameter(s) {', '.join(map(repr, unknown))}; expected "
            f"{', '.join(map(repr, PARAMETERS))}."
        )
    records, next_page_token = services().audit.events(
        actor(), **{name: request.args.get(name) for name in PARAMETERS}
    )
    answer = {"events": [record.to_api() for record in records]}
    if next_page_token is not None:
        answer["next_page_token"] = next_page_token
    return jsonify(answer)


ROUTES = [Route("/mlflow/hokusai/audit/list", "GET", list_events)]


def install(app: Flask, services: Services) -> None:
    register(app, services, ROUTES)
