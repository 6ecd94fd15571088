"""Shared pieces of the benchmarks: the servers being compared, tables, process-tree memory.

Every benchmark starts its own servers on 127.0.0.1 in temporary directories (through the test
suite's ``Server``), measures them side by side in one run and prints medians and ratios. Job
execution (MLflow's background huey workers) is turned off on every server alike, so idle
helper processes do not steal CPU from the comparison.
"""

from __future__ import annotations

import os
import secrets
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from tests.server import Server  # noqa: E402

COMMON_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
BENCH_PASSWORD = "bench-Password-1234"


_BASE_DIR: str | None = None


def use_base_dir(path: str | None) -> None:
    """Put the servers' directories (databases included) under ``path``; None: the system's
    temporary directory."""
    global _BASE_DIR
    _BASE_DIR = path


def memory_dir() -> str | None:
    """A RAM-backed directory when the machine has one (so SQLite's fsyncs cost nothing and
    disk noise from other processes does not leak into a CPU comparison)."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def workdir(label: str) -> str:
    return tempfile.mkdtemp(prefix=f"hokusai-bench-{label}-", dir=_BASE_DIR)


def start_all(servers, timeout: float = 600.0) -> None:
    """Start the servers side by side (start-up is mostly waiting on imports and locks), from
    this thread: a server is stopped when the thread that launched it ends."""
    for server in servers:
        server.launch()
    for server in servers:
        server.wait_ready(timeout)


def stop_and_remove(servers) -> None:
    for server in servers:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)


def plain_server(*, workers: int, args: list[str] | None = None, env: dict | None = None) -> Server:
    """Stock ``mlflow server`` without any auth app."""
    return Server(
        workdir("plain"),
        workers=workers,
        app_name=None,
        args=args,
        env={**COMMON_ENV, **(env or {})},
    )


def hokusai_server(
    *, workers: int, args: list[str] | None = None, env: dict | None = None
) -> Server:
    return Server(workdir("hokusai"), workers=workers, args=args, env={**COMMON_ENV, **(env or {})})


class BasicAuthServer(Server):
    """``mlflow server --app-name basic-auth`` with a known admin password and a config file.

    ``cache_ttl`` > 0 turns on MLflow's credential cache (``auth_cache_ttl_seconds``).
    """

    def __init__(self, *, workers: int, cache_ttl: int = 0, args: list[str] | None = None):
        directory = workdir("basic-auth")
        ini = Path(directory) / "basic_auth.ini"
        db = Path(directory) / "basic_auth.db"
        self.admin_password = "admin-" + secrets.token_urlsafe(12)
        ini.write_text(
            "[mlflow]\n"
            "default_permission = READ\n"
            f"database_uri = sqlite:///{db}\n"
            "admin_username = admin\n"
            # MLflow 3.15 reads the password only from the file (later releases also from env).
            f"admin_password = {self.admin_password}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            f"auth_cache_ttl_seconds = {cache_ttl}\n"
        )
        env = {
            **COMMON_ENV,
            "MLFLOW_AUTH_CONFIG_PATH": str(ini),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
            "MLFLOW_AUTH_ADMIN_PASSWORD": self.admin_password,
        }
        super().__init__(directory, workers=workers, app_name="basic-auth", env=env, args=args)

    def create_user(self, username: str, password: str = BENCH_PASSWORD) -> tuple[str, str]:
        """A non-admin user created through MLflow's REST API; returns its (user, password)."""
        response = requests.post(
            self.url + "/api/2.0/mlflow/users/create",
            json={"username": username, "password": password},
            auth=("admin", self.admin_password),
            timeout=60,
        )
        response.raise_for_status()
        return username, password


def median(values) -> float:
    return statistics.median(values) if values else float("nan")


def print_table(headers: list[str], rows: list[list]) -> None:
    """A Markdown table, so the output can be pasted into the README as it is."""
    cells = [[str(c) for c in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    print(line(cells[0]))
    print("| " + " | ".join("-" * w for w in widths) + " |")
    for row in cells[1:]:
        print(line(row))


# -- process-tree memory (Linux /proc; the servers here always run on Linux) --------------
def _children(pid: int) -> list[int]:
    found = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                found += [int(p) for p in handle.read().split()]
    except OSError:
        pass
    return found


def _tree(pid: int) -> list[int]:
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        if current not in found:
            found.append(current)
            stack += _children(current)
    return found


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time used so far by ``pid`` and its (living) descendants."""
    total = 0
    for current in _tree(pid):
        try:
            with open(f"/proc/{current}/stat") as handle:
                fields = handle.read().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
        except (OSError, IndexError, ValueError):
            continue
    return total / os.sysconf("SC_CLK_TCK")


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants."""
    total = 0
    for current in _tree(pid):
        try:
            with open(f"/proc/{current}/statm") as handle:
                total += int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            continue
    return total
