"""The seed guide's core workflow: the stock MLflow client, a key in MLFLOW_TRACKING_TOKEN."""

import time

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression


@pytest.mark.parametrize("prefix", ["", "/api/mlflow"])
def test_core_workflow_with_stock_client(server, tracking, prefix):
    key = server.create_key(f"ml-engineer{prefix.replace('/', '-')}")
    suffix = f"{time.time_ns()}"
    with tracking(server, key, prefix) as mlflow:
        experiment_id = mlflow.create_experiment(f"my-experiment-{suffix}")
        mlflow.set_experiment(f"my-experiment-{suffix}")
        assert (
            mlflow.get_experiment_by_name(f"my-experiment-{suffix}").experiment_id == experiment_id
        )
        assert any(e.experiment_id == experiment_id for e in mlflow.search_experiments())

        X = np.random.RandomState(0).rand(40, 3)
        y = (X[:, 0] > 0.5).astype(int)
        with mlflow.start_run() as run:
            mlflow.log_param("C", 1.0)
            model = LogisticRegression().fit(X, y)
            mlflow.log_metric("accuracy", model.score(X, y))
            mlflow.sklearn.log_model(model, name="model")

        name = f"classifier-{suffix}"
        version = mlflow.register_model(f"runs:/{run.info.run_id}/model", name)
        client = mlflow.tracking.MlflowClient()
        client.set_model_version_tag(name, version.version, "stage", "staging")
        assert client.get_model_version(name, version.version).tags["stage"] == "staging"
        assert client.search_registered_models(filter_string=f"name='{name}'")[0].name == name

        loaded = mlflow.pyfunc.load_model(f"models:/{name}/{version.version}")
        assert list(loaded.predict(X[:5])) == list(model.predict(X[:5]))
        assert client.get_run(run.info.run_id).data.metrics["accuracy"] > 0.5
