"""The guide's complete workflow: train, log metrics and the model, register it, tag the version.

Run against a server:
    export MLFLOW_TRACKING_URI=http://127.0.0.1:5000/api/mlflow
    export MLFLOW_TRACKING_TOKEN=hk_live_...
    # or: export MLFLOW_TRACKING_AUTH=hokusai HOKUSAI_API_KEY=hk_live_...
    python examples/complete_workflow.py

No try/except around log_model: with mlflow-hokusai, artifact upload works.
"""

import os
import sys
import time

import mlflow
import mlflow.sklearn
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score, precision_score, recall_score
from sklearn.model_selection import train_test_split


def main() -> None:
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        sys.exit("Set MLFLOW_TRACKING_URI (and your key) first; see the docstring.")
    suffix = time.strftime("%Y%m%d-%H%M%S") + f"-{time.time_ns() % 1_000_000:06d}"
    experiment_name = f"classification-experiment-{suffix}"
    model_name = f"rf-classifier-{suffix}"

    X, y = make_classification(n_samples=1000, n_features=20, n_classes=2, random_state=0)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=0)

    mlflow.set_experiment(experiment_name)
    with mlflow.start_run() as run:
        n_estimators, max_depth = 10, 10
        mlflow.log_param("n_estimators", n_estimators)
        mlflow.log_param("max_depth", max_depth)
        mlflow.log_param("dataset_size", len(X))

        model = RandomForestClassifier(
            n_estimators=n_estimators, max_depth=max_depth, random_state=42
        )
        model.fit(X_train, y_train)

        predictions = model.predict(X_test)
        accuracy = accuracy_score(y_test, predictions)
        mlflow.log_metric("accuracy", accuracy)
        mlflow.log_metric("precision", precision_score(y_test, predictions))
        mlflow.log_metric("recall", recall_score(y_test, predictions))

        # MLflow >= 3.14 saves scikit-learn models with skops, which refuses to load tree
        # models unless their node type is trusted explicitly (see README, Troubleshooting).
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            registered_model_name=model_name,
            input_example=X_test[:2],
            skops_trusted_types=["sklearn.tree._tree.Tree"],
        )
        print(f"Run completed! ID: {run.info.run_id}")
        print(f"Accuracy: {accuracy:.3f}")

    client = mlflow.MlflowClient()
    version = info.registered_model_version
    client.set_model_version_tag(model_name, version, "algorithm", "random_forest")
    assert client.get_model_version(model_name, version).tags["algorithm"] == "random_forest"

    # The registered version loads back and predicts like the trained model.
    loaded = mlflow.pyfunc.load_model(f"models:/{model_name}/{version}")
    assert list(loaded.predict(X_test[:5])) == list(predictions[:5])

    print(
        f"OK complete_workflow: registered {model_name} version {version} (accuracy {accuracy:.3f})"
    )


if __name__ == "__main__":
    main()
