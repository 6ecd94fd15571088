"""``create_app``: the ``mlflow.app`` entry point behind ``mlflow server --app-name hokusai``.

MLflow's auth engine builds the app (authorization, admin users, fail-closed route tables)
with our authentication function; we add our routes and wrap it in the gate. Imports of
MLflow's server happen inside ``create_app`` only: `mlflow server` imports this module in its
parent process just to inspect ``create_app``.
"""

from __future__ import annotations

import logging


def create_app():
    from mlflow_hokusai import _mlflow, bootstrap
    from mlflow_hokusai.artifacts import s3_streaming
    from mlflow_hokusai.auth import flask_auth, lookup_cache
    from mlflow_hokusai.config import load_settings
    from mlflow_hokusai.keys.service import KeyService
    from mlflow_hokusai.routes import api, gate
    from mlflow_hokusai.routes import availability, token_tags
    from mlflow_hokusai.routes import artifacts
    from mlflow_hokusai.auth.scopes import ReadScope
    from mlflow_hokusai.routes import keys_api

    logging.getLogger("mlflow_hokusai").setLevel(logging.INFO)
    settings = load_settings()
    started = bootstrap.start(settings)
    service = KeyService(
        started.key_store,
        cache_ttl=settings.auth_cache_ttl_seconds,
        environment=settings.key_environment,
        check_password=_mlflow.password_checker(_mlflow.running_user_store()),
    )
    flask_auth.configure(service)
    api.register(started.flask_app)
    _mlflow.make_server_info_public()
    # Further installers (each adds routes/hooks to MLflow's Flask app) go below this line.
    lookup_cache.install(settings.auth_cache_ttl_seconds, service)
    s3_streaming.install()
    token_tags.install(started.flask_app, settings)
    availability.install(started.flask_app, started.runner_app)
    artifacts.install(started.flask_app)
    audit = keys_api.install(started.flask_app, started.key_store, service, settings)
    gate_class = gate.AsgiGate if _mlflow.server_runner() == "uvicorn" else gate.WsgiGate
    native = started.runner_app if started.runner_app is not started.flask_app else None
    read_scope = ReadScope(started.flask_app, native, _mlflow.static_prefix())
    return gate_class(
        started.runner_app, service, settings.url_prefix, _mlflow.static_prefix(),
        read_scope=read_scope, audit=audit,
    )
