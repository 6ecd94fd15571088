"""``mlflow.server.get_app_client("hokusai", tracking_uri=...)``: MLflow's auth client (users,
permissions, roles) plus Hokusai key management.

Credentials are MLflow's usual client settings: ``MLFLOW_TRACKING_TOKEN=hk_live_…`` (sent as a
Bearer key) or ``MLFLOW_TRACKING_AUTH=hokusai`` with ``HOKUSAI_API_KEY``. Errors raise
``MlflowException`` (``RestException``) carrying the server's message.

Importing MLflow's auth client imports the ``mlflow.server.auth`` package, which reads its
(default) auth config and builds MLflow's Flask app object at import time: harmless in a client
process, only slow (a few seconds), so the CLI's online mode uses ``client.keys.RestKeys``.
"""

from __future__ import annotations

from mlflow.server.auth.client import AuthServiceClient

from mlflow_hokusai.client.keys import ApiKey, KeyManagementMixin

__all__ = ["ApiKey", "HokusaiAppClient"]


class HokusaiAppClient(KeyManagementMixin, AuthServiceClient):
    """Key management (``create_api_key``, ``list_api_keys``, ``revoke_api_key``,
    ``rotate_api_key``, ``whoami``) beside ``AuthServiceClient``'s user and permission
    methods, all sent through its ``_request``."""
