"""Token-aware model registration with the SDK: one call registers the version and sets the
Hokusai token tags (``hokusai_token_id``, ``benchmark_metric``, ``benchmark_value``).

Run against a server:
    export MLFLOW_TRACKING_URI=http://127.0.0.1:5000/api/mlflow
    export MLFLOW_TRACKING_AUTH=hokusai HOKUSAI_API_KEY=hk_live_...
    # or: export MLFLOW_TRACKING_TOKEN=hk_live_...
    python examples/tokenized_registration.py
"""

import os
import sys
import time

import mlflow
import sklearn
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from mlflow_hokusai import ModelRegistry
from mlflow_hokusai.tags.rules import TagRuleError


def main() -> None:
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        sys.exit("Set MLFLOW_TRACKING_URI (and your key) first; see the docstring.")
    suffix = time.strftime("%Y%m%d-%H%M%S") + f"-{time.time_ns() % 1_000_000:06d}"
    model_name = f"token-aware-model-{suffix}"
    token_id = f"example-token-{suffix}"

    X, y = make_classification(n_samples=300, n_features=8, random_state=1)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=1)

    mlflow.set_experiment(f"hokusai-experiment-{suffix}")
    with mlflow.start_run() as run:
        model = LogisticRegression().fit(X_train, y_train)
        accuracy = model.score(X_test, y_test)
        mlflow.log_metric("accuracy", accuracy)
        mlflow.sklearn.log_model(
            model, name="model", pip_requirements=[f"scikit-learn=={sklearn.__version__}"]
        )

    registry = ModelRegistry()  # uses MLFLOW_TRACKING_URI and the key settings
    result = registry.register_tokenized_model(
        model_uri=f"runs:/{run.info.run_id}/model",
        model_name=model_name,
        token_id=token_id,
        metric_name="accuracy",
        baseline_value=0.85,
        tags={"team": "examples"},
    )
    print(
        f"Registered {result.name} version {result.version} for token {result.token_id} "
        f"({result.metric} baseline {result.baseline}, run {result.run_id})"
    )

    tags = mlflow.MlflowClient().get_model_version(result.name, result.version).tags
    assert tags["hokusai_token_id"] == token_id
    assert tags["benchmark_metric"] == "accuracy" and float(tags["benchmark_value"]) == 0.85

    # Calling again with the same arguments returns the same version (safe to retry).
    again = registry.register_tokenized_model(
        f"runs:/{run.info.run_id}/model", model_name, token_id, "accuracy", 0.85
    )
    assert again == result

    # Invalid inputs are refused before anything is sent, with the server's own rules.
    try:
        registry.register_tokenized_model(
            f"runs:/{run.info.run_id}/model", model_name, token_id, "accuracy", 1.5
        )
    except TagRuleError as exc:
        print(f"Refused as expected: {exc}")
    else:
        raise AssertionError("an accuracy of 1.5 should have been refused")

    loaded = mlflow.pyfunc.load_model(f"models:/{result.name}/{result.version}")
    assert list(loaded.predict(X_test[:5])) == list(model.predict(X_test[:5]))

    print(
        f"OK tokenized_registration: {result.name} version {result.version} "
        f"carries token {result.token_id}"
    )


if __name__ == "__main__":
    main()
