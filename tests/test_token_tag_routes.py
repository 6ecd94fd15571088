"""Walk the route map of the app that ``create_app`` builds: every route whose request can carry
registry tags must be in ``TAG_WRITING_ROUTES``, so a route added by a new MLflow release cannot
slip past the token-tag checks.

The app is built in a subprocess (building it imports and configures MLflow's server globally).
"""

import json
import subprocess
import sys
import textwrap

import pytest

from tests.server import clean_env

WALK = textwrap.dedent(
    """
    import json
    from mlflow_hokusai.app import create_app

    runner = create_app()
    from mlflow.server import app as flask_app
    from mlflow.server.handlers import HANDLERS
    from mlflow_hokusai.routes import token_tags

    REGISTRY_TAG_TYPES = {"mlflow.RegisteredModelTag", "mlflow.ModelVersionTag"}
    REGISTRY_FILES = {"model_registry.proto", "webhooks.proto"}

    def carries_registry_tags(descriptor, seen=()):
        names = {f.name for f in descriptor.fields}
        if descriptor.file.name in REGISTRY_FILES and {"key", "value"} <= names:
            return True  # a Set...Tag request
        for f in descriptor.fields:
            sub = f.message_type
            if sub is None or sub.full_name in seen:
                continue
            if sub.full_name in REGISTRY_TAG_TYPES:
                return True
            if carries_registry_tags(sub, seen + (descriptor.full_name,)):
                return True
        return False

    messages_of = {}
    for cls, view in HANDLERS.items():
        messages_of.setdefault(view, []).append(cls.DESCRIPTOR)

    flask = []
    for rule in flask_app.url_map.iter_rules():
        descriptors = messages_of.get(flask_app.view_functions[rule.endpoint], [])
        flask.append({
            "path": rule.rule,
            "methods": sorted(rule.methods - {"HEAD", "OPTIONS"}),
            "messages": [d.full_name for d in descriptors],
            "carries": any(carries_registry_tags(d) for d in descriptors),
        })

    def fastapi_routes(routes, prefix=""):
        for route in routes:
            inner = getattr(route, "original_router", None)
            if inner is not None:  # an included router
                yield from fastapi_routes(inner.routes, prefix + route.include_context.prefix)
            elif hasattr(route, "methods") and route.methods:
                yield {"path": prefix + route.path, "methods": sorted(route.methods)}

    native = getattr(runner.app, "router", None)  # None under a WSGI runner
    fastapi = list(fastapi_routes(native.routes)) if native is not None else []

    from mlflow.server.graphql.graphql_schema_extensions import schema
    mutation = schema.graphql_schema.mutation_type
    hooks = [getattr(f, "__name__", repr(f)) for f in flask_app.before_request_funcs[None]]
    print("WALK-RESULT " + json.dumps({
        "flask": flask,
        "fastapi": fastapi,
        "graphql_mutations": sorted(mutation.fields) if mutation else [],
        "table": sorted(list(k) for k in token_tags.route_table()),
        "hooks": hooks,
    }))
    """
)

# Write routes outside MLflow's protobuf handlers whose path mentions the registry, each
# reviewed: none of them writes registry tags.
REVIEWED_NOT_TAG_WRITING = {
    "/ajax-api/2.0/mlflow/runs/create-promptlab-run": "creates a run; only run tags and params",
}
_REGISTRY_WORDS = ("registered-model", "model-version", "prompt")
_WRITES = {"POST", "PUT", "PATCH"}


@pytest.fixture(scope="module")
def walk(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("walk")
    env = clean_env(
        HOKUSAI_DATABASE_URI=f"sqlite:///{workdir / 'auth.db'}",
        HOKUSAI_BOOTSTRAP_DIR=str(workdir),
        _MLFLOW_SGI_NAME="uvicorn",
        _MLFLOW_SERVER_FILE_STORE=f"sqlite:///{workdir / 'mlflow.db'}",
    )
    result = subprocess.run(
        [sys.executable, "-c", WALK],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("WALK-RESULT ")]
    assert result.returncode == 0 and lines, result.stdout + result.stderr
    return json.loads(lines[-1][len("WALK-RESULT ") :])


def _covered(walk):
    return {tuple(entry) for entry in walk["table"]}


def test_every_protobuf_route_that_carries_registry_tags_is_in_the_table(walk):
    covered = _covered(walk)
    carrying = [
        (route["path"], method)
        for route in walk["flask"]
        if route["carries"]
        for method in route["methods"]
    ]
    # The walker itself must find the four known kinds of request, or it proves nothing.
    found = {m for route in walk["flask"] if route["carries"] for m in route["messages"]}
    assert {
        "mlflow.CreateRegisteredModel",
        "mlflow.SetRegisteredModelTag",
        "mlflow.CreateModelVersion",
        "mlflow.SetModelVersionTag",
    } <= found
    missing = sorted(set(carrying) - covered)
    assert not missing, f"routes that can write registry tags but are not checked: {missing}"


def test_other_registry_write_routes_are_covered_or_reviewed(walk):
    covered = _covered(walk)
    assert walk["fastapi"], "the FastAPI routes were not found: the walk proves nothing"
    unreviewed = []
    routes = [r for r in walk["flask"] if not r["messages"]] + walk["fastapi"]
    for route in routes:
        path = route["path"]
        if not any(word in path for word in _REGISTRY_WORDS):
            continue
        for method in set(route["methods"]) & _WRITES:
            if (path, method) not in covered and path not in REVIEWED_NOT_TAG_WRITING:
                unreviewed.append((path, method))
    assert not unreviewed, f"registry write routes nobody has reviewed for tags: {unreviewed}"


# GraphQL "mutations" MLflow serves; reviewed: all of them only read.
REVIEWED_GRAPHQL_MUTATIONS = {"testMutation", "mlflowSearchRuns", "mlflowSearchDatasets"}


def test_graphql_cannot_write_registry_tags(walk):
    unreviewed = set(walk["graphql_mutations"]) - REVIEWED_GRAPHQL_MUTATIONS
    assert not unreviewed, f"GraphQL mutations nobody has reviewed for tags: {sorted(unreviewed)}"


def test_table_has_no_stale_routes(walk):
    served = {(r["path"], m) for r in walk["flask"] for m in r["methods"]}
    assert _covered(walk) <= served, sorted(_covered(walk) - served)
    assert len(_covered(walk)) == 8  # four routes, REST and ajax-api


def test_tag_hook_runs_after_mlflow_authorization(walk):
    hooks = walk["hooks"]
    assert "_before_request" in hooks and "check_token_tags" in hooks, hooks
    assert hooks.index("_before_request") < hooks.index("check_token_tags"), hooks
