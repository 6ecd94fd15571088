"""``python -m mlflow_hokusai.cli``: the same as the ``mlflow-hokusai`` command."""

from mlflow_hokusai.cli import cli

cli()
