"""Read-only keys: the one table of what counts as a read, and its enforcement.

A ``read`` key may call a route only if this table says the route is a read, whatever its
user may do otherwise. Fail closed: a route that is not listed -- a write, a new MLflow route,
a path nothing serves -- is refused to read keys with 403.

A request is classified by the route that will actually serve it, found the way the server
dispatches: FastAPI's own routes first (in order), then Flask's URL map. That route is named
by its MLflow RPC (``mlflow.SearchRuns``: from MLflow's protos, stable across releases) when it
has one, else by its path with ``/ajax-api/`` folded onto ``/api/`` (the twins are one handler)
and the static prefix removed. Reads that use POST (``runs/search``, ``traces/search``, …)
are reads here: the verb does not decide, the table does.

GraphQL is a read only if every root field of MLflow's schema is a known read (in MLflow 3.x
even its "mutations" are searches); a new root field turns GraphQL off for read keys.
"""

from __future__ import annotations

import functools
import re
import threading

from mlflow_hokusai import _mlflow

# MLflow RPCs that only read (by protobuf full name).
READ_RPCS = frozenset(
    {
        # experiments, runs, metrics, artifacts
        "mlflow.GetExperiment",
        "mlflow.GetExperimentByName",
        "mlflow.SearchExperiments",
        "mlflow.GetRun",
        "mlflow.SearchRuns",
        "mlflow.GetMetricHistory",
        "mlflow.GetMetricHistoryBulkInterval",
        "mlflow.ListArtifacts",
        "mlflow.CreatePresignedDownloadUrl",
        "mlflow.SearchDatasets",
        # logged models
        "mlflow.GetLoggedModel",
        "mlflow.SearchLoggedModels",
        "mlflow.ListLoggedModelArtifacts",
        # traces and assessments
        "mlflow.GetTraceInfo",
        "mlflow.GetTraceInfoV3",
        "mlflow.GetTrace",
        "mlflow.BatchGetTraces",
        "mlflow.BatchGetTraceInfos",
        "mlflow.SearchTraces",
        "mlflow.SearchTracesV3",
        "mlflow.SearchUnifiedTraces",
        "mlflow.GetOnlineTraceDetails",
        "mlflow.CalculateTraceFilterCorrelation",
        "mlflow.QueryTraceMetrics",
        "mlflow.GetAssessmentRequest",
        # model registry
        "mlflow.GetRegisteredModel",
        "mlflow.SearchRegisteredModels",
        "mlflow.GetLatestVersions",
        "mlflow.GetModelVersion",
        "mlflow.SearchModelVersions",
        "mlflow.GetModelVersionDownloadUri",
        "mlflow.GetModelVersionByAlias",
        # proxied artifacts (mlflow-artifacts)
        "mlflow.artifacts.DownloadArtifact",
        "mlflow.artifacts.ListArtifacts",
        "mlflow.artifacts.GetPresignedDownloadUrl",
        # workspaces, webhooks, datasets, scorers, issues, label schemas, review queues
        "mlflow.ListWorkspaces",
        "mlflow.GetWorkspace",
        "mlflow.ListWebhooks",
        "mlflow.GetWebhook",
        "mlflow.GetDataset",
        "mlflow.SearchEvaluationDatasets",
        "mlflow.GetDatasetExperimentIds",
        "mlflow.GetDatasetRecords",
        "mlflow.ListScorers",
        "mlflow.ListScorerVersions",
        "mlflow.GetScorer",
        "mlflow.issues.GetIssue",
        "mlflow.issues.SearchIssues",
        "mlflow.label_schemas.GetLabelSchema",
        "mlflow.label_schemas.GetLabelSchemaByName",
        "mlflow.label_schemas.ListLabelSchemas",
        "mlflow.review_queues.GetReviewQueue",
        "mlflow.review_queues.GetReviewQueueByName",
        "mlflow.review_queues.ListReviewQueues",
        "mlflow.review_queues.ListReviewQueueItems",
        "mlflow.GetPromptOptimizationJob",
        "mlflow.SearchPromptOptimizationJobs",
        # AI gateway configuration (reading it; invoking endpoints is not a read)
        "mlflow.GetGatewaySecretInfo",
        "mlflow.ListGatewaySecretInfos",
        "mlflow.GetGatewayEndpoint",
        "mlflow.ListGatewayEndpoints",
        "mlflow.GetGatewayModelDefinition",
        "mlflow.ListGatewayModelDefinitions",
        "mlflow.ListGatewayEndpointBindings",
        "mlflow.GetGatewayBudgetPolicy",
        "mlflow.ListGatewayBudgetPolicies",
        "mlflow.ListGatewayBudgetWindows",
        "mlflow.GetGatewayGuardrail",
        "mlflow.ListGatewayGuardrails",
        "mlflow.ListEndpointGuardrailConfigs",
    }
)

# Routes without an RPC that read a run's, logged model's, model version's or trace's files
# (and a run's metric histories in bulk), decided per resource by MLflow's engine: reads for
# read keys, and callable by resource-limited keys (``resource_limits.py``).
ARTIFACT_ROUTES = frozenset(
    {
        ("GET", "/get-artifact"),
        ("GET", "/model-versions/get-artifact"),
        ("GET", "/api/2.0/mlflow/get-trace-artifact"),
        ("GET", "/api/3.0/mlflow/get-trace-artifact"),
        ("GET", "/api/2.0/mlflow/logged-models/<model_id>/artifacts/files"),
        ("GET", "/api/2.0/mlflow/metrics/get-history-bulk"),
        # proxied artifact download (FastAPI's own route)
        ("GET", "/api/2.0/mlflow-artifacts/artifacts/<path:artifact_path>"),
    }
)
# Routes without an RPC that only read: (method, canonical path).
READ_ROUTES = ARTIFACT_ROUTES | frozenset(
    {
        # the UI and its files
        ("GET", "/"),
        ("GET", "/static-files/<path:path>"),
        ("GET", "/build/<path:filename>"),
        ("GET", "/health"),
        ("GET", "/metrics"),  # with --expose-prometheus (admins only, by MLflow's rules)
        ("GET", "/version"),
        ("GET", "/api/3.0/mlflow/server-info"),
        ("POST", "/api/2.0/mlflow/experiments/search-datasets"),
        ("GET", "/api/3.0/mlflow/ui-telemetry"),
        ("GET", "/api/3.0/mlflow/scorers/online-configs"),
        ("GET", "/api/3.0/mlflow/gateway/supported-providers"),
        ("GET", "/api/3.0/mlflow/gateway/supported-models"),
        ("GET", "/api/3.0/mlflow/gateway/provider-config"),
        ("GET", "/api/3.0/mlflow/gateway/secrets/config"),
        ("GET", "/gateway/mlflow/v1/models"),
        # jobs (FastAPI and Flask)
        ("POST", "/api/3.0/jobs/search"),
        ("GET", "/api/3.0/jobs/<job_id>"),
        ("GET", "/api/3.0/mlflow/jobs/<job_id>"),
        # MCP server registry (FastAPI)
        ("GET", "/api/3.0/mlflow/mcp-servers"),
        ("GET", "/api/3.0/mlflow/mcp-servers/endpoints"),
        ("GET", "/api/3.0/mlflow/mcp-servers/<path:name>"),
        ("GET", "/api/3.0/mlflow/mcp-servers/<path:name>/versions"),
        ("GET", "/api/3.0/mlflow/mcp-servers/<path:name>/versions/<path:version>"),
        ("GET", "/api/3.0/mlflow/mcp-servers/<path:name>/endpoints"),
        ("GET", "/api/3.0/mlflow/mcp-servers/<path:name>/endpoints/<endpoint_id>"),
        ("GET", "/api/3.0/mlflow/mcp-servers/<path:name>/aliases/<path:alias>"),
        # skills registry (FastAPI, MLflow 3.18)
        ("GET", "/api/3.0/mlflow/skills"),
        ("GET", "/api/3.0/mlflow/skills/<name>"),
        ("GET", "/api/3.0/mlflow/skills/<name>/versions"),
        ("GET", "/api/3.0/mlflow/skills/<name>/versions/<version>"),
        ("GET", "/api/3.0/mlflow/skills/<name>/aliases/<alias>"),
        ("GET", "/api/3.0/mlflow/skills/@<organization>/<name>"),
        ("GET", "/api/3.0/mlflow/skills/@<organization>/<name>/versions"),
        ("GET", "/api/3.0/mlflow/skills/@<organization>/<name>/versions/<version>"),
        ("GET", "/api/3.0/mlflow/skills/@<organization>/<name>/aliases/<alias>"),
        # MLflow users, permissions and roles (reading them)
        ("GET", "/api/2.0/mlflow/users/current"),
        ("GET", "/api/2.0/mlflow/users/get"),
        ("GET", "/api/2.0/mlflow/users/list"),
        ("GET", "/api/3.0/mlflow/users/current/permissions"),
        ("GET", "/api/3.0/mlflow/users/permissions/get"),
        ("GET", "/api/3.0/mlflow/users/permissions/list"),
        ("GET", "/api/3.0/mlflow/users/roles/list"),
        ("GET", "/api/3.0/mlflow/roles/get"),
        ("GET", "/api/3.0/mlflow/roles/list"),
        ("GET", "/api/3.0/mlflow/roles/permissions/list"),
        ("GET", "/api/3.0/mlflow/roles/users/list"),
        # ours: who am I, which keys do I have, what happened to them (creating, rotating,
        # revoking are writes)
        ("GET", "/api/2.0/mlflow/hokusai/whoami"),
        ("GET", "/api/2.0/mlflow/hokusai/api-keys/list"),
        ("GET", "/api/2.0/mlflow/hokusai/audit/list"),
        ("GET", "/hokusai/keys"),  # the key page and its files
        ("GET", "/hokusai/keys.js"),
        ("GET", "/hokusai/keys.css"),
        ("GET", "/api/2.0/mlflow/hokusai/federation/policies/list"),
        ("GET", "/api/2.0/mlflow/hokusai/federation/policies/get"),
        ("GET", "/api/2.0/mlflow/hokusai/run-artifacts"),
    }
)

GRAPHQL_PATH = "/graphql"
# Root fields of MLflow's GraphQL schema known to only read.
GRAPHQL_READ_FIELDS = frozenset(
    {
        "Query.mlflowGetExperiment",
        "Query.mlflowGetMetricHistoryBulkInterval",
        "Query.mlflowGetRun",
        "Query.mlflowListArtifacts",
        "Query.mlflowSearchModelVersions",
        "Query.mlflowSearchRuns",
        "Query.mlflowSearchDatasets",
        "Query.test",
        "Mutation.mlflowSearchDatasets",
        "Mutation.mlflowSearchRuns",
        "Mutation.testMutation",
    }
)

_AJAX = re.compile(r"^/ajax-api/")
_STARLETTE_PATH_PARAM = re.compile(r"\{(\w+):path\}")
_STARLETTE_PARAM = re.compile(r"\{(\w+)\}")


def canonical(path: str, static_prefix: str = "") -> str:
    """A route template in one spelling: no static prefix, ``/api/`` for ``/ajax-api/``,
    werkzeug-style parameters (``<path:name>``) for Starlette's (``{name:path}``)."""
    if static_prefix and path.startswith(static_prefix + "/"):
        path = path[len(static_prefix) :]
    path = _AJAX.sub("/api/", path)
    path = _STARLETTE_PATH_PARAM.sub(r"<path:\1>", path)
    return _STARLETTE_PARAM.sub(r"<\1>", path)


class ReadScope:
    """Answers "is this request a read?" for the running app. Built on first use, after every
    installer has added its routes. ``native``: the routes MLflow's FastAPI app serves itself
    (``_mlflow.NativeRoutes``; none under WSGI)."""

    def __init__(
        self, flask_app=None, native: _mlflow.NativeRoutes | None = None, static_prefix: str = ""
    ):
        self.flask_app = flask_app
        self.native = native or _mlflow.NativeRoutes()
        self.static_prefix = static_prefix
        self._lock = threading.Lock()
        self._built = False
        # The gate asks for every authenticated request; most ask about a few hundred paths.
        self.other_methods = functools.lru_cache(maxsize=4096)(self._other_methods)

    def _build(self) -> None:
        self._rpcs = {(path, method): name for path, method, name in _mlflow.rpc_routes()}
        self._graphql_is_read = _mlflow.graphql_root_fields() <= GRAPHQL_READ_FIELDS

    def _ensure_built(self) -> None:
        if not self._built:
            with self._lock:
                if not self._built:
                    self._build()
                    self._built = True

    def _is_read_route(self, template: str, method: str) -> bool:
        name = self._rpcs.get((template, method))
        if name is not None:
            return name in READ_RPCS
        route = canonical(template, self.static_prefix)
        if route == GRAPHQL_PATH:
            return self._graphql_is_read
        return (method, route) in READ_ROUTES

    def route_of(self, path: str, method: str) -> str | None:
        """The template of the route that will serve (method, path), or None if none will."""
        self._ensure_built()
        template = self.native.match(path, method)
        if template is not None or self.flask_app is None:
            return template
        try:
            rule, _ = self.flask_app.url_map.bind("localhost").match(path, method, return_rule=True)
        except Exception:  # NotFound, MethodNotAllowed, RequestRedirect: nothing serves it
            return None
        return rule.rule

    def _other_methods(self, path: str, method: str) -> frozenset | None:
        """None when a route serves (method, path) or redirects it (a missing slash); else
        the methods routes serve ``path`` with (empty: no route serves it at all). A scope
        built without an app knows no routes and claims nothing is unserved."""
        if self.flask_app is None and not self.native.routes:
            return None
        if self.route_of(path, method) is not None:
            return None
        methods = set(self.native.methods_of(path))
        if self.flask_app is not None:
            from werkzeug.exceptions import MethodNotAllowed
            from werkzeug.routing import RequestRedirect

            try:
                self.flask_app.url_map.bind("localhost").match(path, method)
            except RequestRedirect:
                return None
            except MethodNotAllowed as refused:
                methods.update(refused.valid_methods or ())
            except Exception:  # NotFound: no rule has the path
                pass
        return frozenset(methods)

    def is_read(self, path: str, method: str) -> bool:
        method = method.upper()
        if method == "OPTIONS":
            return True  # CORS preflight / allowed-methods probe: no handler runs
        if method == "HEAD":
            method = "GET"
        template = self.route_of(path, method)
        return template is not None and self._is_read_route(template, method)

    def refusal(self, identity, path: str, method: str) -> str | None:
        """None if ``identity`` may make this request, else the 403 message."""
        if identity.scope == "write" or self.is_read(path, method):
            return None
        return (
            f"This API key is read-only: {method} {path} is not a read. "
            "Use a write key for changes."
        )

    def table(self) -> list[dict]:
        """Every route the app serves with its classification (for tests and review)."""
        self._ensure_built()
        rows = []
        for template, methods, name in self.native.routes:
            for method in sorted(methods - {"HEAD"}):
                rows.append(self._row("fastapi", template, method, name))
        if self.flask_app is not None:
            for rule in self.flask_app.url_map.iter_rules():
                for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
                    rows.append(self._row("flask", rule.rule, method, rule.endpoint))
        return rows

    def _row(self, kind: str, template: str, method: str, name: str) -> dict:
        return {
            "kind": kind,
            "method": method,
            "route": canonical(template, self.static_prefix),
            "rpc": self._rpcs.get((template, method)),
            "endpoint": name,
            "read": self._is_read_route(template, method),
        }
