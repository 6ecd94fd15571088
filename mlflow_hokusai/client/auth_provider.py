"""``MLFLOW_TRACKING_AUTH=hokusai``: send a Hokusai API key with every MLflow client request.

MLflow's request-auth plugins (entry point group ``mlflow.request_auth_provider``) are its
public way to add credentials to outgoing requests: ``mlflow.utils.rest_utils.http_request``
asks the provider named by ``MLFLOW_TRACKING_AUTH`` for a ``requests`` auth object on every
call — tracking, registry, proxied artifact upload/download and the multipart-upload control
calls alike. (Presigned cloud-storage URLs are fetched without it, as they must be.)

This replaces the old advice of monkeypatching a private MLflow function. ``MLFLOW_TRACKING_TOKEN``
on its own also works with our server; the plugin adds a Hokusai-named variable
(``HOKUSAI_API_KEY``) and fails early and clearly when no key is configured, instead of
sending an anonymous request and getting a 401.

**Keyless CI.** With no key configured, the plugin exchanges the workload's own OIDC token for
a short-lived key at the server's ``token-exchange`` endpoint (``auth/token_exchange.py``): a token
read from ``HOKUSAI_OIDC_TOKEN_FILE`` (e.g. a Kubernetes projected service-account token; read
again at each exchange, as the kubelet rotates it), or GitHub Actions' own token
(``ACTIONS_ID_TOKEN_REQUEST_URL`` / ``ACTIONS_ID_TOKEN_REQUEST_TOKEN``, for the audience in
``HOKUSAI_OIDC_AUDIENCE``; the job needs ``permissions: id-token: write``). The key is kept
in memory only and exchanged again well before it expires (after 80 % of its lifetime, or two
minutes before its end for long ones), so a job that runs longer than one key's lifetime
keeps working.

This module is imported by MLflow whenever its request-auth registry loads, so it stays light.
"""

from __future__ import annotations

import os
import threading
import time
from urllib.parse import quote

import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking.request_auth.abstract_request_auth_provider import RequestAuthProvider

PROVIDER_NAME = "hokusai"
KEY_ENV_VARS = ("HOKUSAI_API_KEY", "MLFLOW_TRACKING_TOKEN")
TOKEN_FILE_ENV = "HOKUSAI_OIDC_TOKEN_FILE"
AUDIENCE_ENV = "HOKUSAI_OIDC_AUDIENCE"
GITHUB_URL_ENV = "ACTIONS_ID_TOKEN_REQUEST_URL"
GITHUB_TOKEN_ENV = "ACTIONS_ID_TOKEN_REQUEST_TOKEN"
EXCHANGE_PATH = "/api/2.0/mlflow/hokusai/token-exchange"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"


def configured_key() -> str | None:
    """The key to send: ``HOKUSAI_API_KEY``, else ``MLFLOW_TRACKING_TOKEN`` (blank = unset)."""
    for name in KEY_ENV_VARS:
        value = (os.environ.get(name) or "").strip()
        if value:
            return value
    return None


class HokusaiBearerAuth(requests.auth.AuthBase):
    """Sets ``Authorization: Bearer <key>``, replacing whatever MLflow put there
    (e.g. Basic auth from ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``)."""

    def __init__(self, key: str):
        self._key = key

    def __call__(self, request):
        request.headers["Authorization"] = f"Bearer {self._key}"
        return request

    def __repr__(self) -> str:  # never show the key in logs or tracebacks
        return f"{type(self).__name__}(key=<{len(self._key)} chars>)"


def _env(name: str) -> str | None:
    return (os.environ.get(name) or "").strip() or None


def workload_configured() -> bool:
    return bool(_env(TOKEN_FILE_ENV) or (_env(GITHUB_URL_ENV) and _env(GITHUB_TOKEN_ENV)))


def workload_token() -> str:
    """The workload's OIDC token: from ``HOKUSAI_OIDC_TOKEN_FILE``, else from GitHub Actions'
    token endpoint for ``HOKUSAI_OIDC_AUDIENCE``."""
    path = _env(TOKEN_FILE_ENV)
    if path:
        try:
            with open(path, encoding="utf-8") as file:
                token = file.read().strip()
        except OSError as e:
            raise MlflowException(f"{TOKEN_FILE_ENV}={path!r} cannot be read: {e}") from None
        if not token:
            raise MlflowException(f"{TOKEN_FILE_ENV}={path!r} is empty.")
        return token
    url, secret, audience = _env(GITHUB_URL_ENV), _env(GITHUB_TOKEN_ENV), _env(AUDIENCE_ENV)
    if not audience:
        raise MlflowException(
            f"Keyless CI on GitHub Actions needs {AUDIENCE_ENV}: the audience of the server's "
            "federation policy (e.g. your MLflow server's URL)."
        )
    joiner = "&" if "?" in url else "?"
    response = requests.get(
        f"{url}{joiner}audience={quote(audience, safe='')}",
        headers={"Authorization": f"bearer {secret}"},
        timeout=30,
    )
    if response.status_code != 200:
        raise MlflowException(
            f"GitHub Actions refused an OIDC token ({response.status_code}); does the job have "
            "'permissions: id-token: write'?"
        )
    return response.json()["value"]


class _ExchangedKey:
    """The key from the last exchange, and when to exchange again (per tracking URI)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._keys: dict[str, tuple[str, float]] = {}  # tracking URI -> (key, renew at)

    def get(self, tracking_uri: str) -> str:
        with self._lock:
            known = self._keys.get(tracking_uri)
            if known is not None and time.time() < known[1]:
                return known[0]
            key, lifetime = exchange(tracking_uri, workload_token())
            self._keys[tracking_uri] = (key, time.time() + renew_after(lifetime))
            return key

    def clear(self) -> None:
        with self._lock:
            self._keys.clear()


def renew_after(lifetime: float) -> float:
    """Seconds after an exchange to exchange again: at 80 % of the lifetime, or two minutes
    before the end when that is earlier (but never before half of it)."""
    return min(0.8 * lifetime, max(0.5 * lifetime, lifetime - 120))


def exchange(tracking_uri: str, token: str) -> tuple[str, float]:
    """Trade ``token`` for a key at ``tracking_uri``: (key, lifetime in seconds)."""
    response = requests.post(
        tracking_uri.rstrip("/") + EXCHANGE_PATH,
        data={
            "grant_type": GRANT_TYPE,
            "subject_token": token,
            "subject_token_type": JWT_TOKEN_TYPE,
        },
        timeout=30,
    )
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code != 200 or "access_token" not in body:
        message = body.get("message") or f"HTTP {response.status_code}"
        raise MlflowException(f"Exchanging the workload's OIDC token for a key failed: {message}")
    return body["access_token"], float(body.get("expires_in", 900))


_EXCHANGED = _ExchangedKey()


class HokusaiAuthProvider(RequestAuthProvider):
    """The ``hokusai`` request-auth provider; MLflow instantiates it once and calls
    ``get_auth`` per request, so a key changed in the environment is picked up at once."""

    def get_name(self) -> str:
        return PROVIDER_NAME

    def get_auth(self) -> HokusaiBearerAuth:
        key = configured_key()
        if key is None and workload_configured():
            import mlflow

            return HokusaiBearerAuth(_EXCHANGED.get(mlflow.get_tracking_uri()))
        if key is None:
            # Raised inside http_request before the request is sent.
            raise MlflowException(
                "MLFLOW_TRACKING_AUTH=hokusai needs a Hokusai API key: set HOKUSAI_API_KEY "
                "(or MLFLOW_TRACKING_TOKEN) to your hk_live_... key, or for keyless CI "
                f"{TOKEN_FILE_ENV} or GitHub Actions' id-token permission with {AUDIENCE_ENV}. "
                "No request was sent."
            )
        return HokusaiBearerAuth(key)
