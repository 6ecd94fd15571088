"""The services the routes use, built once by ``create_app`` and handed to every installer:
no installer reaches another module's globals. Views read them from
``current_app.extensions["hokusai"]`` (``services()``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from flask import current_app

from mlflow_hokusai._mlflow import NativeRoutes
from mlflow_hokusai.auth.authenticator import Authenticator
from mlflow_hokusai.auth.cache import LookupCache
from mlflow_hokusai.auth.rate_limits import RateLimits
from mlflow_hokusai.auth.scopes import ReadScope
from mlflow_hokusai.auth.secret_scanning import SecretScanning
from mlflow_hokusai.auth.sessions import SessionManager
from mlflow_hokusai.auth.sign_in import OidcSignIn
from mlflow_hokusai.auth.token_exchange import TokenExchange
from mlflow_hokusai.config import Settings
from mlflow_hokusai.keys.audit import AuditLog
from mlflow_hokusai.keys.management import KeyManager
from mlflow_hokusai.keys.trust_policies import TrustPolicyManager
from mlflow_hokusai.metrics import AuthMetrics
from mlflow_hokusai.store.keys import KeyStore

EXTENSION = "hokusai"


@dataclass
class Services:
    settings: Settings
    key_store: KeyStore
    cache: LookupCache  # the worker's one lookup cache (keys, passwords, MLflow's lookups)
    authenticator: Authenticator
    audit: AuditLog
    keys: KeyManager
    native_routes: NativeRoutes  # what MLflow's FastAPI app serves itself (empty under WSGI)
    read_scope: ReadScope
    static_prefix: str
    rate_limits: RateLimits  # per-key limits, counted in the shared store
    trust_policies: TrustPolicyManager | None = None  # keyless CI: its trust policies (admins)
    token_exchange: TokenExchange | None = None  # keyless CI: token in, short-lived key out
    metrics: AuthMetrics = field(default_factory=AuthMetrics)  # off unless --expose-prometheus
    sessions: SessionManager | None = None  # signed-in browsers (None: sign-in is off)
    sign_in: OidcSignIn | None = None  # the OpenID provider's sign-in (None: off)
    secret_scanning: SecretScanning | None = None  # leaked keys reported by GitHub: revoked
    # Run when the worker stops cleanly, before it exits (the key webhook sender finishes
    # the POST under way): under uvicorn at the ASGI lifespan's shutdown.
    on_shutdown: list[Callable[[], None]] = field(default_factory=list)

    def shutdown(self) -> None:
        for stop in self.on_shutdown:
            try:
                stop()
            except Exception:
                logging.getLogger(__name__).warning("could not stop %r", stop, exc_info=True)

    def api_paths(self, base: str) -> list[str]:
        """``base`` under both API roots (``/api/2.0`` and ``/ajax-api/2.0``)."""
        return [f"{self.static_prefix}/{root}/2.0{base}" for root in ("api", "ajax-api")]


def services() -> Services:
    return current_app.extensions[EXTENSION]
