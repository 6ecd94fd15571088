"""Searching the model registry and loading models by version and by alias.

The guide loads ``models:/<name>/Production``; stages are deprecated in MLflow, so this example
uses an alias (``models:/<name>@champion``) for the same purpose.

Run against a server:
    export MLFLOW_TRACKING_URI=http://127.0.0.1:5000/api/mlflow
    export MLFLOW_TRACKING_TOKEN=hk_live_...
    # or: export MLFLOW_TRACKING_AUTH=hokusai HOKUSAI_API_KEY=hk_live_...
    python examples/registry_search_and_load.py
"""

import os
import sys
import time

import mlflow
import numpy as np
import sklearn
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression


def main() -> None:
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        sys.exit("Set MLFLOW_TRACKING_URI (and your key) first; see the docstring.")
    suffix = time.strftime("%Y%m%d-%H%M%S") + f"-{time.time_ns() % 1_000_000:06d}"
    model_name = f"my-classifier-{suffix}"
    X, y = make_classification(n_samples=200, n_features=5, random_state=0)
    X_new = X[:5]

    # Two versions of one registered model, from two runs.
    mlflow.set_experiment(f"registry-example-{suffix}")
    trained = {}
    for c in (0.01, 1.0):
        with mlflow.start_run():
            model = LogisticRegression(C=c).fit(X, y)
            mlflow.log_metric("accuracy", model.score(X, y))
            info = mlflow.sklearn.log_model(
                model,
                name="model",
                registered_model_name=model_name,
                input_example=X_new,
                # Declared requirements spare MLflow inferring them (it loads the model in a
                # subprocess to see what it imports, which takes seconds).
                pip_requirements=[f"scikit-learn=={sklearn.__version__}"],
            )
            trained[str(info.registered_model_version)] = model

    client = mlflow.MlflowClient()
    client.set_registered_model_alias(model_name, "champion", "2")
    client.set_model_version_tag(model_name, "2", "stage", "production")

    # Search for models and versions.
    models = client.search_registered_models(filter_string=f"name = '{model_name}'")
    for model in models:
        print(f"Model: {model.name} aliases={model.aliases}")
    assert [m.name for m in models] == [model_name] and models[0].aliases == {"champion": "2"}
    versions = client.search_model_versions(filter_string=f"name = '{model_name}'")
    for version in versions:
        print(f"  Version {version.version}: run {version.run_id} tags={version.tags}")
    assert sorted(v.version for v in versions) == ["1", "2"]
    tagged = client.search_model_versions(
        filter_string=f"name = '{model_name}' AND tag.stage = 'production'"
    )
    assert [v.version for v in tagged] == ["2"]
    assert client.get_model_version_by_alias(model_name, "champion").version == "2"

    # Load a specific version, and the version the alias points to.
    by_version = mlflow.pyfunc.load_model(model_uri=f"models:/{model_name}/1")
    by_alias = mlflow.pyfunc.load_model(model_uri=f"models:/{model_name}@champion")
    assert np.array_equal(by_version.predict(X_new), trained["1"].predict(X_new))
    assert np.array_equal(by_alias.predict(X_new), trained["2"].predict(X_new))
    print(f"Predictions (champion): {by_alias.predict(X_new).tolist()}")

    print(f"OK registry_search_and_load: {model_name} loaded by version 1 and by alias @champion")


if __name__ == "__main__":
    main()
