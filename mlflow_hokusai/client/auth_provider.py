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

This module is imported by MLflow whenever its request-auth registry loads, so it stays light.
"""

from __future__ import annotations

import os

import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking.request_auth.abstract_request_auth_provider import RequestAuthProvider

PROVIDER_NAME = "hokusai"
KEY_ENV_VARS = ("HOKUSAI_API_KEY", "MLFLOW_TRACKING_TOKEN")


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


class HokusaiAuthProvider(RequestAuthProvider):
    """The ``hokusai`` request-auth provider; MLflow instantiates it once and calls
    ``get_auth`` per request, so a key changed in the environment is picked up at once."""

    def get_name(self) -> str:
        return PROVIDER_NAME

    def get_auth(self) -> HokusaiBearerAuth:
        key = configured_key()
        if key is None:
            # Raised inside http_request before the request is sent.
            raise MlflowException(
                "MLFLOW_TRACKING_AUTH=hokusai needs a Hokusai API key: set HOKUSAI_API_KEY "
                "(or MLFLOW_TRACKING_TOKEN) to your hk_live_... key. No request was sent."
            )
        return HokusaiBearerAuth(key)
