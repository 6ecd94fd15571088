"""Direct artifact REST calls with ``requests`` on both artifact paths.

The old deployment answered 404 on ``/api/2.0/mlflow-artifacts/...`` and told users to fall back
to ``/ajax-api/2.0/mlflow-artifacts/...``. Here both work, for listing (by ``?run_id=`` as in the
guide, or by ``?path=``), downloading and uploading.

Run against a server:
    export MLFLOW_TRACKING_URI=http://127.0.0.1:5000/api/mlflow
    export MLFLOW_TRACKING_TOKEN=hk_live_...
    # or: export MLFLOW_TRACKING_AUTH=hokusai HOKUSAI_API_KEY=hk_live_...
    python examples/artifact_rest.py
"""

import os
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import requests

ARTIFACT_PATHS = ("api/2.0/mlflow-artifacts/artifacts", "ajax-api/2.0/mlflow-artifacts/artifacts")


def main() -> None:
    base = os.environ.get("MLFLOW_TRACKING_URI", "").rstrip("/")
    key = os.environ.get("HOKUSAI_API_KEY") or os.environ.get("MLFLOW_TRACKING_TOKEN")
    if not base.startswith(("http://", "https://")) or not key:
        sys.exit("Set MLFLOW_TRACKING_URI (http...) and HOKUSAI_API_KEY or MLFLOW_TRACKING_TOKEN.")
    headers = {"Authorization": f"Bearer {key}"}
    suffix = time.strftime("%Y%m%d-%H%M%S") + f"-{time.time_ns() % 1_000_000:06d}"

    # A run with a couple of artifacts, logged by the stock client.
    mlflow.set_experiment(f"artifact-example-{suffix}")
    content = f"accuracy: 0.93 ({suffix})\n"
    with mlflow.start_run() as run, tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp, "report.txt")
        report.write_text(content)
        mlflow.log_artifact(str(report))
        mlflow.log_dict({"n_estimators": 10}, "config/params.json")
    # mlflow-artifacts:/<experiment>/<run>/artifacts -> the path the artifact API expects.
    run_root = urlparse(run.info.artifact_uri).path.lstrip("/")
    run_id = run.info.run_id

    for api in ARTIFACT_PATHS:
        url = f"{base}/{api}"
        # List the run's artifacts by run id (the guide's form).
        by_run = requests.get(url, params={"run_id": run_id}, headers=headers, timeout=30)
        by_run.raise_for_status()
        files = {f["path"]: f for f in by_run.json().get("files", [])}
        print(f"/{api}?run_id={run_id}: {sorted(files)}")
        assert files["report.txt"]["file_size"] == len(content.encode())
        assert files["config"]["is_dir"]
        sub = requests.get(
            url, params={"run_id": run_id, "path": "config"}, headers=headers, timeout=30
        )
        sub.raise_for_status()
        assert [f["path"] for f in sub.json()["files"]] == ["config/params.json"]

        # The same listing by path under the artifact root, the way the MLflow client asks.
        by_path = requests.get(url, params={"path": run_root}, headers=headers, timeout=30)
        by_path.raise_for_status()
        assert sorted(f["path"] for f in by_path.json()["files"]) == sorted(files)

        # Download one file.
        download = requests.get(f"{url}/{run_root}/report.txt", headers=headers, timeout=30)
        download.raise_for_status()
        assert download.text == content

        # Upload one file (the guide's "artifact upload failed" is gone too).
        name = f"uploaded-via-{api.split('/')[0]}.txt"
        upload = requests.put(
            f"{url}/{run_root}/notes/{name}",
            data=b"uploaded with requests\n",
            headers=headers,
            timeout=30,
        )
        upload.raise_for_status()

    # The stock client sees what was uploaded over REST.
    notes = mlflow.MlflowClient().list_artifacts(run_id, "notes")
    uploaded = sorted(f.path for f in notes)
    assert uploaded == ["notes/uploaded-via-ajax-api.txt", "notes/uploaded-via-api.txt"], uploaded

    print(
        f"OK artifact_rest: listed, downloaded and uploaded artifacts of run {run_id} "
        f"on both artifact paths"
    )


if __name__ == "__main__":
    main()
