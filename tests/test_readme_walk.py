"""The README's "Set up" and "First steps" blocks, run as written from a fresh working directory
against the real server they start (issue 26).

The blocks are read from README.md, so the test follows the README: a changed command runs
changed, and a block this test does not know fails it (teach it the new block's outcome). The
only substitutions are the ones the README asks the reader to make: the port (5000 may be taken
here: a free one instead, in the server command and in every URL) and ``KEY_ID``, the id of a
key, which ``keys list`` shows.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.server import _die_with_parent, clean_env, free_port

ROOT = Path(__file__).resolve().parent.parent
WHOAMI = "/api/2.0/mlflow/hokusai/whoami"
READY = re.compile(r"mlflow-hokusai ready: .*admin key in (\S+)")
# Lines not run, each with its reason.
NOT_RUN = {
    # Its install half is not run: installing the checkout again would re-point the shared
    # environment's installed package (and its entry points) at this checkout for every other
    # process using it. Its start half is run as written, in a fresh folder.
    "pip install -e . && mlflow server --app-name hokusai": "the environment has the package",
    # The whole suite, and apt-get: this test is part of it.
    "bash .ci/setup && python -m pytest -q": "the suite runs this test",
}


def _blocks(section: str) -> list[list[str]]:
    """The code blocks of a README section: each a list of its lines."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return [block.strip("\n").splitlines() for block in re.findall(r"```\w*\n(.*?)```", body, re.S)]


def _command(line: str) -> str:
    """A README line without its trailing comment."""
    return re.sub(r"\s+#\s.*$", "", line).strip()


class Walk:
    """The reader's terminal: one working directory, the server they started, their shell."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = clean_env()
        self.server: subprocess.Popen | None = None
        self.log = directory / "server.log"

    def substitute(self, line: str) -> str:
        return line.replace("127.0.0.1:5000", f"127.0.0.1:{self.port}")

    def start_server(self, line: str) -> str:
        """Start the README's server command (with this test's port); wait for the ready line
        as the README says, and return it."""
        command = [*shlex.split(_command(line)), "--port", str(self.port)]
        with open(self.log, "ab") as log:
            self.server = subprocess.Popen(
                command,
                cwd=self.directory,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert self.server.poll() is None, self.log.read_text(errors="replace")
            found = READY.search(self.log.read_text(errors="replace"))
            if found:
                return found.group(0)
            time.sleep(0.1)
        raise TimeoutError(self.log.read_text(errors="replace"))

    def shell(self, script: str) -> subprocess.CompletedProcess:
        result = subprocess.run(
            ["bash", "-e", "-c", self.substitute(script)],
            cwd=self.directory,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, f"{script}\n{result.stdout}\n{result.stderr}"
        return result

    def status(self, key: str) -> int:
        reply = requests.get(
            self.url + WHOAMI, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        return reply.status_code

    def key_id(self, key: str) -> str:
        """``KEY_ID`` for ``key``: the id ``keys list`` shows in the row of its prefix."""
        for row in self.shell("mlflow-hokusai keys list").stdout.splitlines():
            cells = row.split()
            if len(cells) > 1 and key.startswith(cells[1]):
                return cells[0]
        raise AssertionError(f"no row of keys list has the prefix of {key[:12]}…")

    def stop(self) -> None:
        if self.server is not None and self.server.poll() is None:
            os.killpg(self.server.pid, signal.SIGTERM)
            try:
                self.server.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.server.pid, signal.SIGKILL)


@pytest.fixture
def walk(tmp_path):
    walk = Walk(tmp_path)
    yield walk
    walk.stop()


def test_set_up_and_first_steps_as_written(walk):
    set_up, first_steps = _blocks("Set up"), _blocks("First steps")
    assert len(set_up) == 2 and len(first_steps) == 2, "teach this test the README's new blocks"
    install, tests = set_up
    assert [_command(line) for line in install] == [
        "pip install -e . && mlflow server --app-name hokusai"
    ]
    assert [_command(line) for line in tests] == ["bash .ci/setup && python -m pytest -q"]
    assert {_command(install[0]), _command(tests[0])} == set(NOT_RUN)  # not run: see NOT_RUN

    # Set up: the server, in a fresh folder. The README says to wait for the ready line; when
    # it is there, so are the key file it names and the server's answers.
    # The line's install half is not run (NOT_RUN); its start half is, as written.
    ready = walk.start_server(_command(install[0]).split(" && ", 1)[1])
    key_file = walk.directory / "hokusai_admin_key"
    assert ready.endswith(f"admin key in {key_file}")
    admin_key = key_file.read_text().strip()
    assert admin_key.startswith("hk_live_") and admin_key not in walk.log.read_text()
    assert walk.status(admin_key) == 200

    # First steps, block 1: the stock client with the admin key from the file.
    client, keys = first_steps
    listed = walk.shell("\n".join(client)).stdout
    assert "name='Default'" in listed, listed

    # Block 2, line by line in one folder; KEY_ID is the key the line before made.
    create, list_line, rotate, rotate_grace, revoke = (_command(line) for line in keys)
    assert create.startswith("KEY=$(") and "KEY_ID" in rotate + rotate_grace + revoke
    key = walk.shell(f'{create}\nprintf %s "$KEY"').stdout.strip()
    assert key.startswith("hk_live_") and walk.status(key) == 200
    table = walk.shell(list_line).stdout
    assert re.search(r"\balice\b.*\blaptop\b", table), table

    replacement = walk.shell(rotate.replace("KEY_ID", walk.key_id(key))).stdout.strip()
    assert replacement.startswith("hk_live_") and replacement != key
    assert walk.status(replacement) == 200 and walk.status(key) == 401  # no grace: at once

    graced = walk.shell(rotate_grace.replace("KEY_ID", walk.key_id(replacement))).stdout.strip()
    assert graced.startswith("hk_live_")
    assert walk.status(graced) == 200 and walk.status(replacement) == 200  # 24 h more

    walk.shell(revoke.replace("KEY_ID", walk.key_id(graced)))
    time.sleep(1.5)  # "refused by every worker within 1 second"
    assert all(walk.status(graced) == 401 for _ in range(4))
