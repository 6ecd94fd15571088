"""The token-tag hook: every MLflow route that can write registry tags is checked before its
handler runs, so a bad Hokusai token tag is refused and nothing is written.

``TAG_WRITING_ROUTES`` is the one table of those routes; ``tests/test_token_tag_routes.py``
walks the built app's route map and fails if a route that can carry registry tags is missing.
The hook is a Flask ``before_request`` function registered after MLflow's auth engine's own:
Flask runs them in registration order and stops at the first that answers, so a caller who is
not authenticated or not authorized gets MLflow's 401/403, never a tag message. The URL prefix
is stripped by the gate before Flask sees the path, so prefixed requests match too.
"""

from __future__ import annotations

import logging
from typing import Literal, NamedTuple

from flask import Flask, g, request

from mlflow_hokusai import _mlflow
from mlflow_hokusai.auth.flask_auth import current_identity
from mlflow_hokusai.config import ConfigError
from mlflow_hokusai.routes.api import mlflow_style_json
from mlflow_hokusai.routes.services import Services
from mlflow_hokusai.store.token_claims import TokenClaims
from mlflow_hokusai.tags.guard import MODEL_VERSION, REGISTERED_MODEL, Entity, TokenTagGuard
from mlflow_hokusai.tags.rules import TagRules

_logger = logging.getLogger(__name__)

# How a request carries tags: a "tags" list of {key, value}, or one top-level key/value.
Carried = Literal["tags", "key_value"]
TAG_LIST: Carried = "tags"
KEY_VALUE: Carried = "key_value"


class TagWritingRoute(NamedTuple):
    base: str  # under /api/2.0 and /ajax-api/2.0
    method: str
    entity: Entity  # what the request writes tags on
    carried: Carried
    creating: bool  # the request creates the entity (so it has no tags yet)


TAG_WRITING_ROUTES = [
    TagWritingRoute("/mlflow/registered-models/create", "POST", REGISTERED_MODEL, TAG_LIST, True),
    TagWritingRoute(
        "/mlflow/registered-models/set-tag", "POST", REGISTERED_MODEL, KEY_VALUE, False
    ),
    TagWritingRoute("/mlflow/model-versions/create", "POST", MODEL_VERSION, TAG_LIST, True),
    TagWritingRoute("/mlflow/model-versions/set-tag", "POST", MODEL_VERSION, KEY_VALUE, False),
]


def route_table(static_prefix: str = "") -> dict[tuple[str, str], TagWritingRoute]:
    """(full path, method) -> table row, for the REST and ajax-api path of every row."""
    table = {}
    for row in TAG_WRITING_ROUTES:
        for api in ("api", "ajax-api"):
            table[(f"{static_prefix}/{api}/2.0{row.base}", row.method)] = row
    return table


def _pairs(body: dict, carried: Carried) -> list[tuple[object, object]]:
    if carried == KEY_VALUE:
        value = body.get("value")
        return [(body.get("key"), "" if value is None else value)]
    tags = body.get("tags")
    if not isinstance(tags, list):
        return []
    pairs = []
    for tag in tags:
        if isinstance(tag, dict):
            value = tag.get("value")
            pairs.append((tag.get("key"), "" if value is None else value))
    return pairs


def _may_read(model_name: str) -> bool:
    """May the caller see that ``model_name`` exists? Admins may; others when MLflow says
    they can read it."""
    identity = current_identity()
    if identity is None:
        return False
    return identity.is_admin or _mlflow.can_read_registered_model(model_name, identity.username)


def install(app: Flask, services: Services) -> TokenTagGuard:
    """Register the hook on MLflow's Flask app. Call after MLflow's auth engine is set up:
    its own ``before_request`` must run first. A ``HokusaiError`` from the guard (400, 409)
    and an outage (503) go through the one error path (``routes/errors.py``)."""
    try:
        rules = TagRules.from_config(services.settings.hokusai_section)
    except ValueError as error:
        raise ConfigError(f"[hokusai] token tag rules: {error}") from None
    guard = TokenTagGuard(rules, _mlflow.registry_store, TokenClaims(services.key_store.engine))
    table = route_table(services.static_prefix)

    def check_token_tags():
        row = table.get((request.path, request.method))
        if row is None:
            return None
        body = mlflow_style_json()
        if body is None or not isinstance(body.get("name"), str):
            return None  # MLflow's handler refuses such a request itself
        version = body.get("version")
        if row.entity == MODEL_VERSION and not row.creating and not isinstance(version, str):
            return None
        pairs = _pairs(body, row.carried)
        g.hokusai_token_claims = guard.check(
            row.entity, body["name"], version, pairs, row.creating, may_read=_may_read
        )
        return None

    def release_claims(_exc):
        claims = g.pop("hokusai_token_claims", None)
        if claims:
            try:
                guard.release(claims)
            except Exception:  # the claim expires on its own
                _logger.warning("could not release a token claim", exc_info=True)

    app.before_request(check_token_tags)
    app.teardown_request(release_claims)
    return guard
