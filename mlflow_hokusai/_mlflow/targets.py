"""Every MLflow-private name the modules of ``_mlflow/`` use, checked at start-up.

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
PERMISSIONS = "mlflow.server.auth.permissions"
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


def _group(purpose: str, module: str, *attributes: str, **options) -> tuple[Target, ...]:
    """Targets in one module that serve one purpose (same ``required`` and ``since``)."""
    return tuple(Target(module, attribute, purpose, **options) for attribute in attributes)


def _optional(module: str, attribute: str, purpose: str, since: str = "3.15") -> Target:
    """A speed-up: without it, start-up warns and its patch is skipped."""
    return Target(module, attribute, purpose, required=False, since=since)


# Where MLflow keeps the names below.
ENV = "mlflow.environment_variables"
REST = "mlflow.utils.rest_utils"
ARTIFACT_REPO = "mlflow.store.artifact.artifact_repo"
REPO_REGISTRY = "mlflow.store.artifact.artifact_repository_registry"
GRAPHQL = "mlflow.server.graphql.graphql_schema_extensions"
# The artifact-router names the streaming download route uses (asgi_patches.py).
DOWNLOAD_HELPERS = (
    "artifact_router",
    "download_artifact",
    "_is_serving_proxied_artifacts",
    "_get_workspace_scoped_path",
    "_get_artifact_repo",
    "_content_disposition",
)
_S3_BASES = "streaming S3 uploads (the base classes of artifacts/s3_streaming.py)"
_DOWNLOADS = "stream artifact downloads from S3"
_REDACTION = "skip run redaction of bodies without links"
_LISTING = "the ?run_id= listing"

TARGETS: tuple[Target, ...] = (
    # resource-limited keys (resource_limit_patches.py): where MLflow decides a permission
    *_group(
        "label a point check with its resource (limits)",
        AUTH,
        "_role_permission_for",
        "_role_permission_for_known_workspace",
    ),
    Target(AUTH, "_get_role_permission_or_default", "cap a point check (resource limits)"),
    Target(AUTH, "_role_based_read_predicate", "filter searches (resource limits)"),
    Target(AUTH, "_resolve_requirement_decisions", "cap 3.17's decisions (limits)", since="3.17"),
    Target(AUTH, "RetentionGate.retains", "filter listings (resource limits)", since="3.17"),
    Target(AUTH, "_get_readable_resource_ids", "scope SQL searches (limits)", since="3.18"),
    Target(AUTH, "REQUEST_SCOPE_HANDLERS", "build SQL scopes on fresh grants", since="3.18"),
    # MLflow's permissions: lowered by the caps, ordered for ceilings (keys/resource_limits.py)
    *_group("cap permissions (resource limits)", PERMISSIONS, "NO_PERMISSIONS", "get_permission"),
    Target(PERMISSIONS, "PERMISSION_PRIORITY", "order permissions (caps, key ceilings)"),
    # refusals decided on fresh data (patches.decide_refusals_on_fresh_data)
    Target(AUTH, "_before_request", "decide a 403 again on fresh data"),
    Target(AUTH, "_after_request", "decide response filters again on fresh data"),
    Target(AUTH, "filter_experiment_ids", "decide runs/search's filter again on fresh data"),
    Target(AUTH, "_find_fastapi_response_filter", "decide FastAPI filters again on fresh data"),
    # accessors
    Target(AUTH, "create_app", "let MLflow's auth engine build the app"),
    Target(AUTH, "store", "the running auth store (users, permissions)"),
    Target(AUTH, "validate_can_read_run", f"authorize {_LISTING} like GetRun"),
    Target(AUTH, "is_unprotected_route", "see whether server-info is public"),
    Target(AUTH, "sender_is_admin", "take the admin flag from the request's identity"),
    Target(AUTH_STORE, "SqlAlchemyStore.init_db", "open the auth database (bootstrap)"),
    Target(AUTH_STORE, "SqlAlchemyStore.authenticate_user", "MLflow password logins"),
    Target(AUTH_STORE, "SqlAlchemyStore.get_user", "a user's admin flag"),
    Target(AUTH_STORE, "SqlAlchemyStore.has_user", "failed logins take one time"),
    Target(AUTH_STORE, "SqlAlchemyStore.delete_user", "revoke a deleted user's keys"),
    Target(AUTH_STORE, "SqlAlchemyStore.create_user", "a new user inherits no old keys"),
    Target(ENV, "_MLFLOW_SGI_NAME", "which server runs the app (set by `mlflow server`)"),
    Target(HANDLERS, "STATIC_PREFIX_ENV_VAR", "the --static-prefix `mlflow server` was given"),
    Target(HANDLERS, "_get_tracking_store", f"load a run for {_LISTING}"),
    Target(HANDLERS, "_get_model_registry_store", "token-id uniqueness and existing tags"),
    Target(HANDLERS, "_list_artifacts", f"answer {_LISTING}"),
    *_group(
        f"list a run's artifact root ({_LISTING})",
        HANDLERS,
        "list_artifacts_impl",
        "_list_logged_model_artifacts_impl",
    ),
    Target("mlflow.protos.service_pb2", "ListArtifacts", "list a run's artifact root"),
    Target("mlflow.utils.proto_json_utils", "message_to_json", "list a run's artifact root"),
    Target(HANDLERS, "get_endpoints", "the RPC name of every route (read-only keys)"),
    Target(GRAPHQL, "schema", "GraphQL root fields (read-only keys)"),
    Target(S3_REPO, "S3ArtifactRepository", _S3_BASES),
    Target(ARTIFACT_REPO, "StreamUploadMixin", _S3_BASES),
    *_group(
        "streaming S3 uploads",
        S3_REPO,
        "S3ArtifactRepository._get_s3_client",
        "S3ArtifactRepository.get_s3_file_upload_extra_args",
        "S3ArtifactRepository.parse_s3_compliant_uri",
    ),
    Target(REPO_REGISTRY, "_artifact_repository_registry.register", "streaming S3 uploads"),
    *_group(
        "the CLI's online mode", REST, "MlflowHostCreds", "http_request", "verify_rest_response"
    ),
    _optional(
        AUTH,
        "_get_registered_model_or_prompt_permission",
        "name a token id's holder only to callers who may read it",
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
    _optional(AUTH_STORE, "SqlAlchemyStore.list_grants", "cache role grants", since="3.17"),
    _optional(AUTH, "_fetch_or_none", "cache a run's experiment", since="3.17"),
    _optional(AUTH, "_scope_matches_native_route", "remember native routes", since="3.17"),
    *_group(
        "run the FastAPI permission middleware only where it acts",
        AUTH,
        "_find_fastapi_validator",
        "add_fastapi_permission_middleware",
        required=False,
    ),
    *_group(_DOWNLOADS, ARTIFACT_ROUTER, *DOWNLOAD_HELPERS, required=False),
    _optional("mlflow.utils.uri", "validate_path_is_safe", _DOWNLOADS),
    _optional("mlflow.utils.mime_type_utils", "_guess_mime_type", _DOWNLOADS),
    *_group(
        "run the workspace middleware only where it acts",
        FASTAPI_APP,
        "add_fastapi_workspace_middleware",
        required=False,
    ),
    _optional(ENV, "MLFLOW_ENABLE_WORKSPACES", "run the workspace middleware only where it acts"),
    _optional(
        FASTAPI_APP,
        "add_gateway_timing_middleware",
        "run the gateway timing middleware only where it acts",
    ),
    _optional(AUTH, "AFTER_REQUEST_HANDLERS", _REDACTION),
    *_group(
        _REDACTION,
        AUTH,
        "PARAMETERIZED_AFTER_REQUEST_HANDLERS",
        "redact_get_run_model_links",
        "redact_search_runs_model_links",
        required=False,
        since="3.17",
    ),
)


def lookup(module: str, attribute: str):
    """The object of a listed target (None when this MLflow lacks an optional one, or a
    required one that first appeared in a later release than this one)."""
    import mlflow

    for target in TARGETS:
        if (target.module, target.attribute) == (module, attribute):
            found = target.find()
            if found is None and target.required and target.expected(mlflow.__version__):
                raise RuntimeError(f"MLflow has no {target.name} ({target.purpose})")
            return found
    raise KeyError(f"{module}.{attribute} is not listed in _mlflow/targets.py")


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
