"""Peak resident-memory growth of our server while a large artifact goes through its proxy to S3.

Starts moto's S3 server and ``mlflow server --app-name hokusai --artifacts-destination
s3://BUCKET/PREFIX`` (``MLFLOW_S3_ENDPOINT_URL`` pointing at moto), both on 127.0.0.1, then
uploads one file of ``--size-mib`` MiB with the stock MLflow client through the tracking URI
``http://HOST:PORT/api/mlflow``, twice:

- ``single PUT``: the client streams the file in one ``PUT …/mlflow-artifacts/artifacts/…``; the
  server passes it on to S3 (in parts while it arrives);
- ``multipart``: ``MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD=true`` on both sides; the server only
  creates and completes the upload, the parts go to presigned S3 URLs.

While each upload runs, the resident memory of the server's whole process tree is sampled every
20 ms from /proc; the growth over the level just before the upload is printed (target: at most
150 MiB for 1 GiB). moto keeps objects in its own process's memory: it is not counted.

    python bench/artifact_memory.py [--size-mib 1024] [--workers 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import _support  # noqa: E402  (bench/ is on sys.path when run as a script)

from tests.s3 import MotoS3  # noqa: E402
from tests.server import Server  # noqa: E402

MiB = 1024 * 1024


class PeakRss:
    """Samples a process tree's RSS in a thread; ``growth`` is peak minus the starting level."""

    def __init__(self, pid: int, interval: float = 0.02):
        self.pid, self.interval = pid, interval
        self.base = self.peak = _support.tree_rss_bytes(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _support.tree_rss_bytes(self.pid))
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _support.tree_rss_bytes(self.pid))

    @property
    def growth(self) -> int:
        return self.peak - self.base


def write_file(path: str, size: int) -> None:
    block = os.urandom(MiB)
    with open(path, "wb") as handle:
        for start in range(0, size, MiB):
            handle.write(block[: min(MiB, size - start)])


def upload(mlflow, run_id: str, path: str, multipart: bool, size: int) -> None:
    os.environ["MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD"] = "true" if multipart else "false"
    # Large enough parts to be realistic, small enough that a tiny --size-mib is multipart too.
    os.environ["MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE"] = str(min(size, 500 * MiB))
    os.environ["MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE"] = str(max(5 * MiB, min(size // 4, 100 * MiB)))
    mlflow.MlflowClient().log_artifact(run_id, path, "multipart" if multipart else "single")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=1)
    options = parser.parse_args(argv)
    size = options.size_mib * MiB

    s3 = MotoS3().start()
    work = tempfile.mkdtemp(prefix="hokusai-bench-")
    server = Server(
        work,
        workers=options.workers,
        env=s3.server_env(
            MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD="true",
            MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
            TMPDIR=work,
        ),
        args=["--artifacts-destination", f"s3://{s3.bucket}/bench"],
    )
    try:
        server.start()
        key = server.create_key("bench-user")
        for name in [n for n in os.environ if n.startswith("MLFLOW_")]:
            del os.environ[name]
        os.environ["MLFLOW_TRACKING_TOKEN"] = key
        import mlflow

        mlflow.set_tracking_uri(server.url + "/api/mlflow")
        experiment = mlflow.create_experiment("artifact-memory")
        run = mlflow.MlflowClient().create_run(experiment)
        run_id = run.info.run_id
        source = os.path.join(work, "payload.bin")
        warm = os.path.join(work, "warm-up.bin")
        write_file(warm, MiB)
        write_file(source, size)
        prefix = f"bench/{experiment}/{run_id}/artifacts/"

        rows = []
        for label, multipart in (("single PUT", False), ("multipart", True)):
            upload(mlflow, run_id, warm, multipart, MiB)  # load code paths first
            time.sleep(1)
            started = time.monotonic()
            with PeakRss(server.proc.pid) as rss:
                upload(mlflow, run_id, source, multipart, size)
            seconds = time.monotonic() - started
            stored = s3.objects(prefix).get(
                f"{prefix}{'multipart' if multipart else 'single'}/payload.bin"
            )
            assert stored == size, f"{label}: stored {stored} bytes, expected {size}"
            rows.append((label, seconds, size / MiB / seconds, rss.base / MiB, rss.growth / MiB))

        print(
            f"\nUpload of {options.size_mib} MiB through {server.url}/api/mlflow to moto S3 "
            f"({options.workers} worker(s)); server process tree RSS:"
        )
        print(f"{'mode':<12}{'seconds':>9}{'MiB/s':>9}{'base MiB':>10}{'peak growth MiB':>17}")
        for label, seconds, rate, base, growth in rows:
            print(f"{label:<12}{seconds:>9.1f}{rate:>9.1f}{base:>10.0f}{growth:>17.1f}")
        worst = max(row[4] for row in rows)
        print(
            f"worst peak growth: {worst:.1f} MiB (target <= 150 MiB): "
            f"{'OK' if worst <= 150 else 'OVER'}"
        )
        return 0
    finally:
        server.stop()
        s3.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
