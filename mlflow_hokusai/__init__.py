"""mlflow-hokusai: an MLflow tracking server protected by Hokusai API keys."""

__version__ = "0.1.0"

__all__ = ["ModelRegistry", "TokenizedModel", "__version__"]
_LAZY = {
    "ModelRegistry": "mlflow_hokusai.client.registry",
    "TokenizedModel": "mlflow_hokusai.client.registry",
}


def __getattr__(name):
    # The SDK imports MLflow's client; the server imports this package too, so load it on use.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
