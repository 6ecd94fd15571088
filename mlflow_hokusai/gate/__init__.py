"""The outer gate, wrapped around the whole app (ASGI under uvicorn, WSGI otherwise).

Before any MLflow code runs it maps ``HOKUSAI_URL_PREFIX`` (default ``/api/mlflow``) onto
MLflow's root, so all later code sees only the canonical path (``paths.py``); authenticates
every request except the public allowlist, once, refuses what a key's scope, resource limits or
rate limit do not allow, and hands the identity to everything after it (``decision.py``, one
I/O-free decision for both servers; ``asgi.py`` and ``wsgi.py`` adapt it). MLflow's auth
engine then authorizes; the gate makes sure FastAPI-native routes without an MLflow validator
cannot be reached anonymously either. ``json_errors.py`` rewrites MLflow's error answers into
ours on the way out.
"""

from mlflow_hokusai.gate.asgi import AsgiGate
from mlflow_hokusai.gate.wsgi import WsgiGate

__all__ = ["AsgiGate", "WsgiGate"]
