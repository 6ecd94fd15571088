"""Search at scale: how long a non-admin's search takes as the server grows, per MLflow release.

For each MLflow (by default the one installed here and the newest, 3.18, from the virtual
environment ``.ci/newest`` makes), starts ``mlflow server --app-name hokusai`` on SQLite with
``default_permission = NO_PERMISSIONS``: a user owns 10 experiments (one run each) and 10
registered models, everything else belongs to nobody they can read. At each size (total
experiments and total registered models: 10, 1,000 and 10,000 by default) it times, as the admin
key, the user's key and the user's key limited to 2 of their experiments and 2 of their
models:

- ``experiments/search`` (max_results 100),
- ``registered-models/search`` (max_results 100),
- ``runs/search`` over the user's 10 experiments (max_results 100).

Prints the median of ``--calls`` calls per cell in milliseconds and each non-admin's ratio to
the admin on the same server (a ratio near 1 means the permission filter costs nothing; MLflow
3.17 filters searches in Python, 3.18 in SQL). The servers run side by side; the extra
experiments and models are written through MLflow's own tracking and registry stores.

    python bench/search_scale.py [--sizes 10,1000,10000] [--calls 15]
                                 [--python PATH ...]   # one per MLflow to compare
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import _support
import requests

from tests.server import Server

API = "/api/2.0/mlflow"
KEYS = "/api/2.0/mlflow/hokusai/api-keys/create"
NEWEST = (
    Path(
        os.environ.get("HOKUSAI_NEWEST_VENV")
        or Path(os.environ.get("TMPDIR", "/tmp")) / "mlflow-hokusai-newest-venv"
    )
    / "bin"
    / "python"
)  # where .ci/newest puts MLflow 3.18
OWNED = 10

POPULATE = r"""
import sys
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as Registry
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as Tracking

uri, start, stop = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
tracking = Tracking(uri, "mlflow-artifacts:/")
registry = Registry(uri)
for i in range(start, stop):
    tracking.create_experiment(f"other-{i:06d}")
    registry.create_registered_model(f"other-model-{i:06d}")
"""


def version_of(python: str) -> str:
    return subprocess.run(
        [python, "-c", "import mlflow; print(mlflow.__version__)"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    ).stdout.strip()


class Target:
    def __init__(self, python: str):
        self.python = python
        self.version = version_of(python)
        directory = _support.workdir(f"search-{self.version}")
        config = Path(directory) / "hokusai.ini"
        config.write_text("[mlflow]\ndefault_permission = NO_PERMISSIONS\n")
        self.server = Server(
            directory,
            workers=2,
            python=python,
            env={**_support.COMMON_ENV, "HOKUSAI_CONFIG": str(config)},
        )
        self.others = 0
        self.keys: dict[str, str] = {}

    def call(self, key: str, method: str, path: str, body: dict) -> dict:
        headers = {"Authorization": f"Bearer {key}"}
        if method == "GET":
            answer = requests.get(self.server.url + path, params=body, headers=headers, timeout=120)
        else:
            answer = requests.post(self.server.url + path, json=body, headers=headers, timeout=120)
        answer.raise_for_status()
        return answer.json()

    def setup(self) -> None:
        admin = self.server.admin_key
        owner = self.call(admin, "POST", KEYS, {"username": "owner"})["key"]
        self.experiments, self.models = [], []
        for i in range(OWNED):
            made = self.call(owner, "POST", f"{API}/experiments/create", {"name": f"own-{i}"})
            self.experiments.append(made["experiment_id"])
            self.call(owner, "POST", f"{API}/runs/create", {"experiment_id": made["experiment_id"]})
            self.call(owner, "POST", f"{API}/registered-models/create", {"name": f"own-m-{i}"})
            self.models.append(f"own-m-{i}")
        limited = self.call(
            admin,
            "POST",
            KEYS,
            {
                "username": "owner",
                "experiments": self.experiments[:2],
                "registered_models": self.models[:2],
            },
        )["key"]
        self.keys = {"admin": admin, "user": owner, "limited key": limited}

    def populate(self, total: int) -> subprocess.Popen | None:
        """Start adding experiments and models up to ``total`` of each (the user's included)."""
        stop = max(total - OWNED, 0)
        if stop <= self.others:
            return None
        process = subprocess.Popen(
            [
                self.python,
                "-c",
                POPULATE,
                self.server.backend_store_uri,
                str(self.others),
                str(stop),
            ],
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        self.others = stop
        return process

    def searches(self) -> dict:
        return {
            "experiments/search": ("POST", f"{API}/experiments/search", {"max_results": 100}),
            "registered-models/search": (
                "GET",
                f"{API}/registered-models/search",
                {"max_results": 100},
            ),
            "runs/search": (
                "POST",
                f"{API}/runs/search",
                {"experiment_ids": self.experiments, "max_results": 100},
            ),
        }

    def time(self, who: str, search: str, calls: int) -> tuple[float, int]:
        """(median milliseconds, results on the first page)."""
        method, path, body = self.searches()[search]
        key = self.keys[who]
        found = self.call(key, method, path, body)  # warm
        size = len(next((v for v in found.values() if isinstance(v, list)), []))
        times = []
        for _ in range(calls):
            started = time.perf_counter()
            self.call(key, method, path, body)
            times.append((time.perf_counter() - started) * 1000)
        return _support.median(times), size


def _usable(python: Path) -> bool:
    """``python`` exists and imports this checkout's mlflow_hokusai (a virtual environment
    left by another checkout may import another copy, or none); said on stderr when it exists
    but does not."""
    if not python.exists():
        return False
    check = subprocess.run(
        [str(python), "-c", "import mlflow_hokusai; print(mlflow_hokusai.__file__)"],
        cwd=Path("/"),  # as a server runs it: not from this checkout's folder
        capture_output=True,
        text=True,
        timeout=120,
    )
    here = Path(__file__).resolve().parent.parent / "mlflow_hokusai"
    found = Path(check.stdout.strip()).resolve().parent if check.returncode == 0 else None
    if found != here:
        print(f"not measuring {python}: it does not import {here}", file=sys.stderr)
    return found == here


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,1000,10000", help="totals, comma-separated")
    parser.add_argument("--calls", type=int, default=15, help="timed calls per cell")
    parser.add_argument(
        "--python",
        action="append",
        help="a Python with the MLflow to measure (repeat to compare); default: this one and "
        f"{NEWEST} when it exists (bash .ci/newest makes it)",
    )
    options = parser.parse_args(argv)
    pythons = options.python or [sys.executable] + ([str(NEWEST)] if _usable(NEWEST) else [])
    sizes = [int(size) for size in options.sizes.split(",")]
    targets = [Target(python) for python in pythons]
    servers = [target.server for target in targets]
    rows = []
    try:
        _support.start_all(servers)
        for target in targets:
            target.setup()
        for size in sizes:
            running = [p for p in (target.populate(size) for target in targets) if p is not None]
            for process in running:
                if process.wait() != 0:
                    raise RuntimeError("populating the stores failed")
            for search in targets[0].searches():
                for target in targets:
                    admin_ms, admin_n = target.time("admin", search, options.calls)
                    row = [f"MLflow {target.version}", f"{size:,}", search, f"{admin_ms:.1f}"]
                    for who in ("user", "limited key"):
                        ms, n = target.time(who, search, options.calls)
                        row += [f"{ms:.1f} ({ms / admin_ms:.2f}x, {n} found)"]
                    rows.append(row)
                    print(" | ".join(row), flush=True)
    finally:
        _support.stop_and_remove(servers)
    print()
    _support.print_table(
        ["MLflow", "experiments / models", "search", "admin ms", "user ms", "limited key ms"],
        rows,
    )
    for target in targets:
        for search in targets[0].searches():
            ratios = [
                float(cell.split("(")[1].split("x")[0])
                for row in rows
                if row[:3] == [f"MLflow {target.version}", f"{sizes[-1]:,}", search]
                for cell in row[4:]
            ]
            print(
                f"MLflow {target.version}, {sizes[-1]:,}, {search}: worst non-admin / admin "
                f"ratio {max(ratios):.2f}x"
            )
    print("target: experiments/search within 2x of the admin on MLflow 3.18")
    return 0


if __name__ == "__main__":
    sys.exit(main())
