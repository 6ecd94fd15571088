"""``create_app``: the ``mlflow.app`` entry point behind ``mlflow server --app-name hokusai``.

MLflow's auth engine builds the app (authorization, admin users, fail-closed route tables)
with our authorization function; we build our services once, hand them to each installer
(``routes.services.Services``, also in ``app.extensions["hokusai"]``), and wrap the app in the
gate. Imports of MLflow's server happen inside ``create_app`` only: `mlflow server` imports
this module in its parent process just to inspect ``create_app``.
"""

from __future__ import annotations

import logging
import os
import secrets

# uvicorn, which `mlflow server` starts with this module already imported (it inspects
# create_app first), would take the client address from X-Forwarded-For for any peer in
# FORWARDED_ALLOW_IPS (127.0.0.1 unless set), so a local process could claim any address. The
# gate decides that itself, from HOKUSAI_TRUSTED_PROXIES (see gate/decision.py); an operator who
# sets FORWARDED_ALLOW_IPS (or uvicorn's --forwarded-allow-ips) keeps uvicorn's rule.
os.environ.setdefault("FORWARDED_ALLOW_IPS", "")

# One value per server, inherited by every worker: only the first worker ready logs the ready
# line (bootstrap.announce_ready; bootstrap.SERVER_RUN_VARIABLE names it).
os.environ.setdefault("_MLFLOW_HOKUSAI_SERVER_RUN", secrets.token_hex(8))


def _show_package_logs() -> None:
    """The package's INFO lines (why a secret-scanning report was refused, which process sends
    the key webhooks) reach the server's stderr. Without a handler Python prints warnings only,
    and neither uvicorn nor gunicorn configures the root logger; where something did (a logging
    set-up of the operator's, pytest's capture), the lines go there instead."""
    package = logging.getLogger("mlflow_hokusai")
    package.setLevel(logging.INFO)
    if not package.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        line = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # as MLflow's own lines
        handler.setFormatter(logging.Formatter(line, "%Y/%m/%d %H:%M:%S"))
        package.addHandler(handler)


def create_app():
    from mlflow_hokusai import _mlflow, bootstrap
    from mlflow_hokusai.artifacts import s3_downloads, s3_streaming
    from mlflow_hokusai.auth import flask_auth, resource_limits
    from mlflow_hokusai.auth.authenticator import Authenticator
    from mlflow_hokusai.auth.cache import (
        LookupCache,
        decided_on_fresh_data,
        decided_on_fresh_data_async,
        fresh_lookups,
    )
    from mlflow_hokusai.auth.login_limits import LoginLimits
    from mlflow_hokusai.auth.rate_limits import rate_limits
    from mlflow_hokusai.auth.scopes import ReadScope
    from mlflow_hokusai.auth.secret_scanning import ScannerKeys, SecretScanning
    from mlflow_hokusai.auth.token_exchange import TokenExchange
    from mlflow_hokusai.auth.workload_tokens import WorkloadTokenVerifier
    from mlflow_hokusai.config import load_settings
    from mlflow_hokusai.errors import HokusaiError
    from mlflow_hokusai.gate import AsgiGate, WsgiGate
    from mlflow_hokusai.keys.audit import AuditLog
    from mlflow_hokusai.keys.lifetime import lifetime_rules
    from mlflow_hokusai.keys.management import KeyManager
    from mlflow_hokusai.keys.trust_policies import TrustPolicyManager
    from mlflow_hokusai.metrics import AuthMetrics, enabled_by_environment
    from mlflow_hokusai.routes import (
        access_log,
        api,
        artifacts,
        audit_api,
        errors,
        key_page,
        keyless_ci_api,
        keys_api,
        model_sources,
        secret_scanning_api,
        sessions_api,
        token_tags,
    )
    from mlflow_hokusai.routes import resource_limits as resource_limit_routes
    from mlflow_hokusai.routes import sign_in as sign_in_routes
    from mlflow_hokusai.routes.services import EXTENSION, Services
    from mlflow_hokusai.store.audit import AuditStore
    from mlflow_hokusai.store.clock import utcnow
    from mlflow_hokusai.store.trust_policies import TrustPolicyStore

    _show_package_logs()
    access_log.install()
    settings = load_settings()
    started = bootstrap.start(settings)
    _mlflow.targets.check()  # every MLflow-private name we use exists (or we say so)
    flask_app, runner_app = started.flask_app, started.runner_app

    # One cache per worker for keys, passwords and MLflow's authorization lookups: a change
    # made here (a revoke, a permission write) clears it at once.
    cache = LookupCache(settings.auth_cache_ttl_seconds)
    rules = lifetime_rules(settings)
    metrics = AuthMetrics(enabled_by_environment())
    audit = AuditLog(AuditStore(started.key_store.engine))
    sessions, sign_in = _sign_in(settings, started.key_store.engine, audit, cache)
    authenticator = Authenticator(
        started.key_store,
        cache,
        check_password=_mlflow.password_checker(_mlflow.running_user_store()),
        login_limits=LoginLimits(settings.login_failure_limit),
        rules=rules,
        metrics=metrics,
        sessions=sessions,
    )
    native = _mlflow.NativeRoutes(runner_app if runner_app is not flask_app else None)
    static_prefix = _mlflow.static_prefix()
    keys = KeyManager(
        started.key_store,
        _mlflow.running_user_store(),
        audit,
        environment=settings.key_environment,
        on_change=cache.clear,  # this worker refuses a revoked key at once
        on_note=logging.getLogger("mlflow_hokusai.keys").info,
        rules=rules,
        default_rate_limit=settings.default_rate_limit,
        webhooks=bool(settings.key_webhook_urls),
    )
    limits = rate_limits(settings, started.key_store.engine)
    policies = TrustPolicyStore(started.key_store.engine)
    services = Services(
        settings=settings,
        key_store=started.key_store,
        cache=cache,
        authenticator=authenticator,
        audit=audit,
        keys=keys,
        native_routes=native,
        read_scope=ReadScope(flask_app, native, static_prefix),
        static_prefix=static_prefix,
        rate_limits=limits,
        trust_policies=TrustPolicyManager(policies, keys, audit),
        token_exchange=TokenExchange(
            policies,
            keys,
            audit,
            WorkloadTokenVerifier(max_token_age=settings.oidc_max_token_age),
            limits,
            settings.token_exchange_limit,
        ),
        metrics=metrics,
        sessions=sessions,
        sign_in=sign_in,
        secret_scanning=SecretScanning(
            ScannerKeys(settings.secret_scanning_keys_url),
            keys,
            limits,
            settings.secret_scanning_limit,
        ),
    )
    metrics.watch_keys(lambda: started.key_store.status_counts(utcnow(), rules.dormant_cutoff()))
    flask_app.extensions[EXTENSION] = services
    flask_auth.install(flask_app, authenticator)

    _mlflow.patches.make_server_info_public()
    _mlflow.patches.check_api_routes_like_their_ajax_twins()
    _mlflow.patches.skip_redundant_request_work()
    _mlflow.patches.serve_head_as_get(flask_app)  # a HEAD is authorized and answered as its GET
    _mlflow.patches.admin_flag_from_identity(flask_auth.caller_identity)
    limiter = resource_limits.ResourceLimiter(
        flask_auth.caller_identity,
        _mlflow.experiment_name,
        lambda key_id: started.key_store.get(key_id).resource_limits,
        ttl=max(settings.auth_cache_ttl_seconds, 0.0),
        experiment_id=_mlflow.experiment_id_by_name,
    )
    _mlflow.resource_limit_patches.cap_permissions(
        limiter.ceiling, resource_limits.note_lowered, limiter.named_experiment_ids
    )
    # --expose-prometheus: MLflow's /metrics is for admins (a read-only admin key scrapes it).
    _mlflow.patches.admins_only([("/metrics", "GET"), ("/metrics", "HEAD")])
    if settings.auth_cache_ttl_seconds > 0:
        _mlflow.patches.cache_authorization_lookups(cache)
        # What another worker just granted is not yet in this worker's cache: a refusal is
        # decided again on fresh data.
        wrapped = _mlflow.patches.decide_refusals_on_fresh_data(
            flask_app, decided_on_fresh_data, decided_on_fresh_data_async, fresh_lookups
        )
        ttl = settings.auth_cache_ttl_seconds
        _warn_unless(
            "before_request" in wrapped,
            "before_request hook",
            f"a request another worker just made allowed may be refused for up to {ttl} s.",
        )
        _warn_unless(
            "after_request" in wrapped,
            "after_request hook",
            "a resource another worker just made readable may be left out of an answer for up "
            f"to {ttl} s.",
        )
    s3_streaming.install()
    # Flask runs before_request hooks in registration order and MLflow's auth engine has
    # registered its own already, so the hooks below (token tags, root listing) only ever
    # see authenticated, authorized requests. The error handlers go first so that every
    # installer's errors take the one path.
    errors.install(flask_app, runner_app)
    api.install(flask_app, services)
    keys_api.install(flask_app, services)
    audit_api.install(flask_app, services)
    key_page.install(flask_app, services)
    sign_in_routes.install(flask_app, services)
    sessions_api.install(flask_app, services)
    resource_limit_routes.install(flask_app, services)
    keyless_ci_api.install(flask_app, services)
    secret_scanning_api.install(flask_app, services)
    model_sources.install(flask_app, services)
    token_tags.install(flask_app, services)
    artifacts.install(flask_app, services)
    # Last: the gate wraps the finished app (the read-only table is built on first use, after
    # every route above exists).
    if runner_app is not flask_app:
        _patch_fastapi_app(runner_app, s3_downloads.open_stream, answers=(HokusaiError,))
    gate_class = AsgiGate if _mlflow.server_runner() == "uvicorn" else WsgiGate
    gate = gate_class(runner_app, services)
    _start_webhook_sender(services, started.key_store.engine, rules)
    bootstrap.announce_when_listening(settings)
    return gate


def _start_webhook_sender(services, engine, rules) -> None:
    """Key event webhooks (``key_webhook_urls``): this worker's sender thread, which sends
    only while it holds the one lease of all workers and replicas (never on a request), and
    stops with the worker, after the POST under way."""
    settings = services.settings
    if not settings.key_webhook_urls:
        return
    from mlflow_hokusai.keys.notices import KeyNotices
    from mlflow_hokusai.keys.webhook_sender import WebhookSender
    from mlflow_hokusai.store.webhooks import WebhookStore

    sender = WebhookSender(
        engine,
        settings.key_webhook_urls,
        settings.key_webhook_secret,
        KeyNotices(WebhookStore(engine), rules),
        max_backoff=settings.key_webhook_max_backoff,
        retry_for=settings.key_webhook_retry_for,
        check_interval=settings.key_webhook_check_interval,
    )
    services.on_shutdown.append(sender.start().stop)


def _sign_in(settings, engine, audit, cache):
    """The session manager and the OpenID sign-in, when ``oidc_issuer`` is set (else None,
    None: a session cookie is then refused like any unknown credential)."""
    if settings.oidc_issuer is None:
        return None, None
    from mlflow_hokusai import _mlflow
    from mlflow_hokusai.auth.group_roles import GroupRoles
    from mlflow_hokusai.auth.sessions import SessionManager
    from mlflow_hokusai.auth.sign_in import OidcSignIn
    from mlflow_hokusai.store.sessions import SessionStore

    store = SessionStore(engine)
    sessions = SessionManager(
        store,
        audit,
        lifetime=settings.session_lifetime,
        idle_timeout=settings.session_idle_timeout,
        on_change=cache.clear,  # this worker refuses a revoked session at once
    )
    users = _mlflow.running_user_store()
    roles = GroupRoles(settings.oidc_group_roles, users, store)
    sign_in = OidcSignIn(settings, sessions, store, users, audit, on_person=roles.apply)
    return sessions, sign_in


def _patch_fastapi_app(asgi_app, open_stream, answers) -> None:
    """The patches of MLflow's FastAPI app (``_mlflow.asgi_patches``), each warned about when
    it did not apply."""
    from mlflow_hokusai._mlflow import asgi_patches

    slower = "it wraps every request (correct, a little slower)."
    _warn_unless(
        asgi_patches.run_permission_middleware_only_where_it_acts(asgi_app),
        "FastAPI permission middleware",
        slower,
    )
    switched = asgi_patches.run_pass_through_middleware_only_where_it_acts(asgi_app)
    for installer in asgi_patches.PASS_THROUGH_MIDDLEWARES:
        _warn_unless(installer in switched, f"middleware of {installer}", slower)
    _warn_unless(
        asgi_patches.stream_artifact_downloads(asgi_app, open_stream, answers=answers),
        "native artifact download route",
        "downloads through the server are spooled to a temporary file first (correct, slower).",
    )


def _warn_unless(applied: bool, target: str, consequence: str) -> None:
    """The one warning of a patch that did not apply: what of MLflow's it did not find where
    expected, and what that costs."""
    if not applied:
        logging.getLogger("mlflow_hokusai").warning(
            "MLflow's %s was not found where expected: %s", target, consequence
        )
