"""Every benchmark script still runs, in a tiny configuration, so none of them can rot.

Timings are never asserted (a shared CI machine makes them meaningless); only that each script
exits cleanly and prints its table and ratio lines.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.server import clean_env

BENCH = Path(__file__).resolve().parent.parent / "bench"

CASES = {
    "throughput.py": (
        ["--rounds", "1", "--duration", "1", "--warmup", "0", "--threads", "1", "--workers", "1"],
        [
            "| server",
            "| mlflow (no auth)",
            "| basic-auth + cache, non-admin",
            "| hokusai, non-admin write key",
            "ratio hokusai non-admin / plain:",
            "| hokusai, non-admin key limited to its experiment",
            "ratio hokusai non-admin limited to its experiment / plain:",
            "| hokusai, non-admin session cookie",
            "ratio hokusai non-admin session cookie / plain:",
        ],
    ),
    "key_scaling.py": (
        ["--keys", "1000", "--rounds", "1", "--calls", "20"],
        ["| keys in database", "| 1,000", "ratio 1,000 keys / 10 keys:"],
    ),
    "artifacts.py": (
        ["--size-mib", "2", "--rounds", "1", "--workers", "1", "--memory-mib", "4"],
        [
            "| transfer",
            "| upload",
            "| download",
            "ratio upload hokusai/plain:",
            "hokusai/boto3:",
            "ratio download hokusai/plain:",
            "plain MLflow server, largest RSS growth during one transfer",
            "hokusai server, RSS growth during one 4 MiB upload:",
        ],
    ),
    "search_scale.py": (
        # only the MLflow installed here: a virtual environment another run left behind must
        # not change what this test starts
        ["--sizes", "10,12", "--calls", "1", "--python", sys.executable],
        ["| MLflow", "| experiments/search", "experiments/search: worst non-admin / admin ratio"],
    ),
    "startup.py": (
        ["--rounds", "1", "--workers", "1"],
        [
            "| server",
            "| mlflow (no auth)",
            "| hokusai",
            "difference hokusai - plain, /health:",
            "difference hokusai ready line - plain /health:",
        ],
    ),
    "artifact_memory.py": (
        ["--size-mib", "8", "--workers", "1"],
        ["peak growth", "worst peak growth:"],
    ),
}


def _text(output) -> str:
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


@pytest.mark.parametrize("script", sorted(CASES))
def test_bench_script_runs(script, tmp_path):
    if not (BENCH / script).exists():
        pytest.fail(f"bench/{script} is missing")
    args, expected = CASES[script]
    try:
        result = subprocess.run(
            [sys.executable, str(BENCH / script), *args],
            cwd=tmp_path,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=540,  # under pytest's 600 s, so a hang shows what the script printed
        )
    except subprocess.TimeoutExpired as hung:
        pytest.fail(f"{script} ran over 540 s:\n{_text(hung.stdout)}\n{_text(hung.stderr)[-4000:]}")
    assert result.returncode == 0, f"{script} failed:\n{result.stdout}\n{result.stderr[-4000:]}"
    for line in expected:
        assert line in result.stdout, f"{script} did not print {line!r}:\n{result.stdout}"
