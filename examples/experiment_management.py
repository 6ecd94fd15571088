"""Creating and managing experiments, as in the guide's "Common Operations".

Run against a server:
    export MLFLOW_TRACKING_URI=http://127.0.0.1:5000/api/mlflow
    export MLFLOW_TRACKING_TOKEN=hk_live_...
    # or: export MLFLOW_TRACKING_AUTH=hokusai HOKUSAI_API_KEY=hk_live_...
    python examples/experiment_management.py
"""

import os
import sys
import time

import mlflow
from mlflow.entities import ViewType


def main() -> None:
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        sys.exit("Set MLFLOW_TRACKING_URI (and your key) first; see the docstring.")
    suffix = time.strftime("%Y%m%d-%H%M%S") + f"-{time.time_ns() % 1_000_000:06d}"
    name = f"my-experiment-{suffix}"

    # Create an experiment (with tags) and make it the active one.
    experiment_id = mlflow.create_experiment(name, tags={"team": "examples"})
    mlflow.set_experiment(name)

    experiment = mlflow.get_experiment_by_name(name)
    print(f"Experiment ID: {experiment.experiment_id}")
    assert experiment.experiment_id == experiment_id
    assert experiment.tags["team"] == "examples"

    # List experiments; search by name and tag.
    for exp in mlflow.search_experiments(max_results=5, order_by=["creation_time DESC"]):
        print(f"{exp.name}: {exp.experiment_id}")
    found = mlflow.search_experiments(filter_string=f"name = '{name}' AND tags.team = 'examples'")
    assert [e.experiment_id for e in found] == [experiment_id]

    # A couple of runs, then find the best one.
    for learning_rate in (0.1, 0.01):
        with mlflow.start_run(run_name=f"lr-{learning_rate}"):
            mlflow.log_param("learning_rate", learning_rate)
            mlflow.log_metric("accuracy", 0.9 if learning_rate == 0.1 else 0.8)
    best = mlflow.search_runs(
        experiment_ids=[experiment_id],
        order_by=["metrics.accuracy DESC"],
        max_results=1,
        output_format="list",
    )[0]
    assert best.data.params["learning_rate"] == "0.1"

    # Rename, tag, delete and restore.
    client = mlflow.MlflowClient()
    client.rename_experiment(experiment_id, name + "-renamed")
    client.set_experiment_tag(experiment_id, "stage", "done")
    client.delete_experiment(experiment_id)
    deleted = mlflow.search_experiments(
        view_type=ViewType.DELETED_ONLY, filter_string=f"name = '{name}-renamed'"
    )
    assert [e.experiment_id for e in deleted] == [experiment_id]
    client.restore_experiment(experiment_id)
    restored = client.get_experiment(experiment_id)
    assert restored.lifecycle_stage == "active" and restored.tags["stage"] == "done"

    print(f"OK experiment_management: experiment {restored.name} ({experiment_id}) with 2 runs")


if __name__ == "__main__":
    main()
