"""Every MLflow-private name we use, in one place.

A new MLflow release that moves one of these changes this file only. Importing
``mlflow.server.auth`` reads its config at import time, so nothing here imports it at module
level: callers set MLFLOW_AUTH_CONFIG_PATH first (see ``bootstrap``).
"""

from __future__ import annotations

import os

SGI_ENV_VAR = "_MLFLOW_SGI_NAME"  # set by `mlflow server` for its workers
STATIC_PREFIX_ENV_VAR = "_MLFLOW_STATIC_PREFIX"  # set by `mlflow server --static-prefix`
AUTHORIZATION_FUNCTION = "mlflow_hokusai.auth.flask_auth:authenticate"


def server_runner() -> str:
    """'uvicorn' (MLflow's default), 'gunicorn' or 'waitress'."""
    return os.environ.get(SGI_ENV_VAR) or "uvicorn"


def static_prefix() -> str:
    return (os.environ.get(STATIC_PREFIX_ENV_VAR) or "").rstrip("/")


def preload() -> None:
    """Import MLflow's server outside the start-up lock so workers do not import it in turn."""
    import mlflow.server.fastapi_app  # noqa: F401


def build_auth_app():
    """Let MLflow's auth engine build its app; return (flask_app, app_for_runner)."""
    from mlflow.server import app as flask_app
    from mlflow.server.auth import create_app

    return flask_app, create_app(flask_app)


def allow_authenticated(rules: list[tuple[str, str]]) -> None:
    """Tell MLflow's fail-closed authorization table that any authenticated user may call
    these (path, method) pairs; our handlers then decide for themselves."""
    from mlflow.server import auth

    for rule in rules:
        auth.BEFORE_REQUEST_VALIDATORS[rule] = auth._allow_authenticated


def user_store(database_uri: str):
    """MLflow's auth user store on ``database_uri`` (runs MLflow's auth migrations)."""
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore()
    store.init_db(database_uri)
    return store


def running_user_store():
    """The user store the running auth app was initialised with."""
    from mlflow.server import auth

    return auth.store


def registry_store():
    """The model registry store the server's handlers write to (same instance, same workspace
    context), for read-only look-ups through its public store API."""
    from mlflow.server.handlers import _get_model_registry_store

    return _get_model_registry_store()


def password_checker(store):
    """A function (username, password) -> is_admin, or None when the login is wrong."""

    def check(username: str, password: str):
        if not store.authenticate_user(username, password):
            return None
        return store.get_user(username).is_admin

    return check
