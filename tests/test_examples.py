"""Every program in ``examples/`` runs, as a user would run it, against a real server.

The examples are this test's input: a new file in ``examples/`` is picked up without editing
this module. Each one must exit 0 and finish with ``OK <name>: ...``. They alternate between the
two documented ways of sending a key (``MLFLOW_TRACKING_TOKEN`` under the ``/api/mlflow`` prefix,
and ``MLFLOW_TRACKING_AUTH=hokusai`` with only ``HOKUSAI_API_KEY`` at the root), and run as a
non-admin user.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import api_key_for
from tests.server import clean_env

EXAMPLES = sorted(
    p
    for p in (Path(__file__).resolve().parent.parent / "examples").glob("*.py")
    if not p.name.startswith("_")
)
MODES = [("token", "/api/mlflow"), ("plugin", "")]
CASES = [(path, *MODES[i % len(MODES)]) for i, path in enumerate(EXAMPLES)]


def test_there_are_examples():
    assert {p.stem for p in EXAMPLES} >= {
        "complete_workflow",
        "experiment_management",
        "registry_search_and_load",
        "tokenized_registration",
        "artifact_rest",
    }


@pytest.fixture(scope="module")
def example_key(server):
    return api_key_for(server, "example-runner")


@pytest.mark.parametrize("path, mode, prefix", CASES, ids=[f"{p.stem}-{m}" for p, m, _ in CASES])
def test_example_runs(server, example_key, tmp_path, path, mode, prefix):
    env = clean_env(MLFLOW_TRACKING_URI=server.url + prefix, MLFLOW_DISABLE_TELEMETRY="true")
    if mode == "token":
        env["MLFLOW_TRACKING_TOKEN"] = example_key
    else:
        env.update(MLFLOW_TRACKING_AUTH="hokusai", HOKUSAI_API_KEY=example_key)
    result = subprocess.run(
        [sys.executable, str(path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    assert result.returncode == 0, output
    last_line = result.stdout.strip().splitlines()[-1]
    assert last_line.startswith(f"OK {path.stem}:"), output
