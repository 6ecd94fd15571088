"""MLflow-private names, fenced in one package: ``accessors`` reads from MLflow, ``patches``
changes it, ``targets`` lists every private name either uses and checks them at start-up.

Everything else in mlflow-hokusai uses MLflow's public API, or this package.
"""

from mlflow_hokusai._mlflow import asgi_patches, patches, targets
from mlflow_hokusai._mlflow.accessors import (
    AUTHORIZATION_FUNCTION,
    SGI_ENV_VAR,
    STATIC_PREFIX_ENV_VAR,
    NativeRoutes,
    build_auth_app,
    can_read_registered_model,
    get_run,
    graphql_root_fields,
    list_logged_model_artifacts,
    list_run_artifacts,
    list_run_root,
    logged_models_of_run,
    password_checker,
    preload,
    registry_store,
    rest_call,
    rpc_routes,
    running_user_store,
    s3_bucket_owner_args,
    s3_client,
    s3_upload_extra_args,
    server_runner,
    static_prefix,
    user_store,
)

__all__ = [
    "AUTHORIZATION_FUNCTION",
    "SGI_ENV_VAR",
    "STATIC_PREFIX_ENV_VAR",
    "NativeRoutes",
    "build_auth_app",
    "can_read_registered_model",
    "get_run",
    "graphql_root_fields",
    "list_logged_model_artifacts",
    "list_run_artifacts",
    "list_run_root",
    "logged_models_of_run",
    "password_checker",
    "asgi_patches",
    "patches",
    "preload",
    "registry_store",
    "rest_call",
    "rpc_routes",
    "running_user_store",
    "s3_bucket_owner_args",
    "s3_client",
    "s3_upload_extra_args",
    "server_runner",
    "static_prefix",
    "targets",
    "user_store",
]
