"""The route list of the app ``create_app`` builds, shared by the security tests that walk
every route (built once per session: it takes a subprocess that builds the whole app)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _server_environment(server) -> dict:
    """The environment `mlflow server` gave its uvicorn process (what every worker sees)."""
    for child in _children(server.proc.pid):
        raw = Path(f"/proc/{child}/environ").read_bytes().decode("utf-8", "replace")
        env = dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)
        if "_MLFLOW_SERVER_FILE_STORE" in env:
            return env
    raise AssertionError("could not find the server's uvicorn process")


@pytest.fixture(scope="session")
def routes(server, tmp_path_factory):
    out = tmp_path_factory.mktemp("routes") / "routes.json"
    script = Path(__file__).with_name("routes_dump.py")
    result = subprocess.run(
        [sys.executable, str(script), str(out)],
        env=_server_environment(server),
        cwd=server.workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(out.read_text())
    assert len(found) > 300  # MLflow 3.x has hundreds; a short list means enumeration broke
    return found
