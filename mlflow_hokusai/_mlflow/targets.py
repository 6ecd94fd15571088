"""Every MLflow-private name ``accessors.py`` and ``patches.py`` use, checked at start-up.

A private name can vanish or move in any MLflow release. Instead of a patch that quietly does
nothing, ``check()`` (run by ``create_app`` once MLflow's auth engine is built) looks each one
up: a missing *required* name stops the server with an error naming the MLflow version and the
name; a missing optional one (a speed-up) logs a warning and its patch is skipped.
``tests/test_mlflow_targets.py`` asserts that each exists on the MLflow under test (both tox
envs); ``since`` is the first supported release that has it.
"""

from __future__ import annotations

import importlib
import logging
from typing import NamedTuple

from packaging.version import Version

_logger = logging.getLogger("mlflow_hokusai")
AUTH = "mlflow.server.auth"
AUTH_STORE = "mlflow.server.auth.sqlalchemy_store"
HANDLERS = "mlflow.server.handlers"
S3_REPO = "mlflow.store.artifact.s3_artifact_repo"
FASTAPI_APP = "mlflow.server.fastapi_app"
ARTIFACT_ROUTER = "mlflow.server.artifact_router"


class Target(NamedTuple):
    module: str
    attribute: str  # dotted: "Class.method" walks attributes
    purpose: str
    required: bool = True  # without it the server cannot run correctly: start-up fails
    since: str = "3.15"  # the first supported MLflow release that has it

    @property
    def name(self) -> str:
        return f"{self.module}.{self.attribute}"

    def find(self):
        """The object, or None when this MLflow does not have it."""
        try:
            found = importlib.import_module(self.module)
        except ImportError:
            return None
        for part in self.attribute.split("."):
            found = getattr(found, part, None)
            if found is None:
                return None
        return found

    def expected(self, version: str) -> bool:
        return Version(version) >= Version(self.since)


TARGETS: tuple[Target, ...] = (
    # resource-limited keys (resource_limit_patches.py): where MLflow's engine works out a
    # permission
    Target(AUTH, "_role_permission_for", "label a point check with its resource (limits)"),
    Target(
        AUTH,
        "_role_permission_for_known_workspace",
        "label a point check with its resource (limits)",
    ),
    Target(AUTH, "_get_role_permission_or_default", "cap a point check (resource limits)"),
    Target(AUTH, "_role_based_read_predicate", "filter searches (resource limits)"),
    Target(
        AUTH,
        "_resolve_requirement_decisions",
        "cap the requirement decisions (resource limits)",
        since="3.17",
    ),
    Target(AUTH, "RetentionGate.retains", "filter listings (resource limits)", since="3.17"),
    Target(
        AUTH,
        "_get_readable_resource_ids",
        "scope SQL searches to what a limited key names (resource limits)",
        since="3.18",
    ),
    Target(
        AUTH,
        "REQUEST_SCOPE_HANDLERS",
        "build a search's SQL scope on fresh grants",
        since="3.18",
    ),
    # refusals decided on fresh data (patches.decide_refusals_on_fresh_data)
    Target(AUTH, "_before_request", "decide a 403 again on fresh data"),
    Target(AUTH, "_after_request", "decide response filters again on fresh data"),
    Target(AUTH, "filter_experiment_ids", "decide runs/search's filter again on fresh data"),
    Target(
        AUTH,
        "_find_fastapi_response_filter",
        "decide FastAPI response filters again on fresh data",
    ),
    # accessors
    Target(AUTH, "create_app", "let MLflow's auth engine build the app"),
    Target(AUTH, "store", "the running auth store (users, permissions)"),
    Target(AUTH, "validate_can_read_run", "authorize the ?run_id= listing like GetRun"),
    Target(AUTH, "is_unprotected_route", "see whether server-info is public"),
    Target(AUTH, "sender_is_admin", "take the admin flag from the request's identity"),
    Target(AUTH_STORE, "SqlAlchemyStore.authenticate_user", "MLflow password logins"),
    Target(AUTH_STORE, "SqlAlchemyStore.get_user", "a user's admin flag"),
    Target(AUTH_STORE, "SqlAlchemyStore.has_user", "failed logins take one time"),
    Target(AUTH_STORE, "SqlAlchemyStore.delete_user", "revoke a deleted user's keys"),
    Target(AUTH_STORE, "SqlAlchemyStore.create_user", "a new user inherits no old keys"),
    Target(HANDLERS, "_get_tracking_store", "load a run for the ?run_id= listing"),
    Target(HANDLERS, "_get_model_registry_store", "token-id uniqueness and existing tags"),
    Target(HANDLERS, "_list_artifacts", "answer the ?run_id= listing"),
    Target(
        HANDLERS,
        "_list_logged_model_artifacts_impl",
        "list a run's MLflow 3 logged models in the ?run_id= listing",
    ),
    Target(HANDLERS, "get_endpoints", "the RPC name of every route (read-only keys)"),
    Target(
        "mlflow.server.graphql.graphql_schema_extensions",
        "schema",
        "GraphQL root fields (read-only keys)",
    ),
    Target(S3_REPO, "S3ArtifactRepository._get_s3_client", "streaming S3 uploads"),
    Target(S3_REPO, "S3ArtifactRepository.get_s3_file_upload_extra_args", "streaming S3 uploads"),
    Target(S3_REPO, "S3ArtifactRepository.parse_s3_compliant_uri", "streaming S3 uploads"),
    Target("mlflow.store.artifact.artifact_repo", "StreamUploadMixin", "streaming S3 uploads"),
    Target("mlflow.utils.rest_utils", "http_request", "the CLI's online mode"),
    Target("mlflow.utils.rest_utils", "verify_rest_response", "the CLI's online mode"),
    Target(
        AUTH,
        "_get_registered_model_or_prompt_permission",
        "name a token id's holder only to callers who may read it",
        required=False,
        since="3.17",
    ),
    Target(AUTH, "auth_config", "the default permission (MLflow before 3.17)"),
    Target(
        AUTH_STORE,
        "SqlAlchemyStore.get_registered_model_permission",
        "a user's grant on a registered model (MLflow before 3.17)",
    ),
    # patches
    Target(AUTH, "BEFORE_REQUEST_VALIDATORS", "authorize our own routes"),
    Target(AUTH, "_UNPROTECTED_PATH_PREFIXES", "make server-info public before MLflow 3.16"),
    Target(
        "mlflow.store.artifact.artifact_repository_registry",
        "_artifact_repository_registry.register",
        "streaming S3 uploads",
    ),
    Target(
        AUTH_STORE,
        "SqlAlchemyStore.list_grants",
        "cache role-grant lookups",
        required=False,
        since="3.17",
    ),
    Target(
        AUTH,
        "_fetch_or_none",
        "cache the run a run route loads for its experiment",
        required=False,
        since="3.17",
    ),
    Target(
        AUTH,
        "_scope_matches_native_route",
        "remember native-route matching per path",
        required=False,
        since="3.17",
    ),
    Target(
        AUTH,
        "_find_fastapi_validator",
        "run the FastAPI permission middleware only where it acts",
        required=False,
    ),
    Target(
        AUTH,
        "add_fastapi_permission_middleware",
        "run the FastAPI permission middleware only where it acts",
        required=False,
    ),
    Target(ARTIFACT_ROUTER, "artifact_router", "stream artifact downloads from S3", required=False),
    Target(
        ARTIFACT_ROUTER, "download_artifact", "stream artifact downloads from S3", required=False
    ),
    Target(
        ARTIFACT_ROUTER,
        "_is_serving_proxied_artifacts",
        "stream artifact downloads from S3",
        required=False,
    ),
    Target(
        ARTIFACT_ROUTER,
        "_get_workspace_scoped_path",
        "stream artifact downloads from S3",
        required=False,
    ),
    Target(
        ARTIFACT_ROUTER, "_get_artifact_repo", "stream artifact downloads from S3", required=False
    ),
    Target(
        ARTIFACT_ROUTER, "_content_disposition", "stream artifact downloads from S3", required=False
    ),
    Target(
        "mlflow.utils.uri",
        "validate_path_is_safe",
        "stream artifact downloads from S3",
        required=False,
    ),
    Target(
        "mlflow.utils.mime_type_utils",
        "_guess_mime_type",
        "stream artifact downloads from S3",
        required=False,
    ),
    Target(
        FASTAPI_APP,
        "add_fastapi_workspace_middleware",
        "run the workspace middleware only where it acts",
        required=False,
    ),
    Target(
        FASTAPI_APP,
        "add_gateway_timing_middleware",
        "run the gateway timing middleware only where it acts",
        required=False,
    ),
    Target(
        AUTH, "AFTER_REQUEST_HANDLERS", "skip run redaction of bodies without links", required=False
    ),
    Target(
        AUTH,
        "PARAMETERIZED_AFTER_REQUEST_HANDLERS",
        "skip run redaction of bodies without links",
        required=False,
        since="3.17",
    ),
    Target(
        AUTH,
        "redact_get_run_model_links",
        "skip run redaction of bodies without links",
        required=False,
        since="3.17",
    ),
    Target(
        AUTH,
        "redact_search_runs_model_links",
        "skip run redaction of bodies without links",
        required=False,
        since="3.17",
    ),
)


def missing(version: str | None = None, targets=TARGETS) -> list[Target]:
    """The targets this MLflow should have (by ``since``) and does not."""
    import mlflow

    version = version or mlflow.__version__
    return [t for t in targets if t.expected(version) and t.find() is None]


def check(targets=TARGETS) -> None:
    """Fail start-up on a missing required name; warn about a missing optional one."""
    import mlflow

    gone = missing(targets=targets)
    for target in gone:
        if not target.required:
            _logger.warning(
                "MLflow %s has no %s (%s): that optimisation is off. mlflow-hokusai was "
                "tested with MLflow 3.15 to 3.18.",
                mlflow.__version__,
                target.name,
                target.purpose,
            )
    required = [t for t in gone if t.required]
    if required:
        names = ", ".join(f"{t.name} ({t.purpose})" for t in required)
        raise RuntimeError(
            f"mlflow-hokusai cannot run on MLflow {mlflow.__version__}: it has no {names}. "
            "Install a supported MLflow (3.15 to 3.x) or a newer mlflow-hokusai."
        )
