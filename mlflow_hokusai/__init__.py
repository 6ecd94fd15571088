"""mlflow-hokusai: an MLflow tracking server protected by Hokusai API keys."""

__version__ = "0.1.0"
