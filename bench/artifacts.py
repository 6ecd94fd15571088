"""Artifact upload and download through our server vs direct boto3, to the same S3 endpoint.

Starts moto's S3 server and ``mlflow server --app-name hokusai --artifacts-destination
s3://BUCKET/PREFIX`` (``MLFLOW_S3_ENDPOINT_URL`` pointing at moto), both on 127.0.0.1. A file of
``--size-mib`` MiB is uploaded and downloaded in alternating rounds, once through the server's
proxied artifact API with a non-admin key (``PUT``/``GET /api/2.0/mlflow-artifacts/artifacts/
EXP/RUN/artifacts/FILE``, streamed the way the MLflow client does it) and once straight to the
endpoint with boto3 (``upload_file``/``download_file``, the default transfer settings, as
MLflow's S3 repository uses). Prints MiB/s, the ratio server/direct (target >= 0.8) and the
server's peak resident-memory growth (sampled over the server's whole process tree).

    python bench/artifacts.py [--size-mib 256] [--rounds 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time

import _support
import requests

from tests.s3 import MotoS3

BUCKET = "hokusai-bench"
CHUNK = 1 << 20


class PeakRss:
    """Samples the resident memory of a process tree in the background; ``growth`` is the peak
    above the baseline taken at start."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.pid, self.interval = pid, interval
        self.baseline = _support.tree_rss_bytes(pid)
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, _support.tree_rss_bytes(self.pid))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak - self.baseline


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    options = parser.parse_args(argv)

    directory = tempfile.mkdtemp(prefix="hokusai-bench-artifacts-")
    source = os.path.join(directory, "source.bin")
    with open(source, "wb") as handle:
        for _ in range(options.size_mib):
            handle.write(os.urandom(CHUNK))
    size = os.path.getsize(source)
    target = os.path.join(directory, "downloaded.bin")

    moto = MotoS3(BUCKET).start()
    server = None
    try:
        s3 = moto.client()
        server = _support.hokusai_server(
            workers=options.workers,
            args=["--artifacts-destination", f"s3://{BUCKET}/hokusai"],
            env=moto.server_env(),
        ).start()
        key = server.create_key("bench-user")
        auth = {"Authorization": f"Bearer {key}"}
        api = server.url + "/api/2.0/mlflow"
        experiment = requests.post(
            api + "/experiments/create", json={"name": "bench-artifacts"}, headers=auth, timeout=60
        ).json()["experiment_id"]
        run = requests.post(
            api + "/runs/create", json={"experiment_id": experiment}, headers=auth, timeout=60
        ).json()["run"]["info"]["run_id"]
        artifact_url = (
            f"{server.url}/api/2.0/mlflow-artifacts/artifacts/{experiment}/{run}/artifacts/big.bin"
        )
        session = requests.Session()
        session.headers.update(auth)

        def server_upload():
            with open(source, "rb") as handle:
                response = session.put(artifact_url, data=handle, timeout=600)
            response.raise_for_status()

        def server_download():
            with session.get(artifact_url, stream=True, timeout=600) as response:
                response.raise_for_status()
                with open(target, "wb") as handle:
                    for chunk in response.iter_content(CHUNK):
                        handle.write(chunk)
            if os.path.getsize(target) != size:
                raise RuntimeError("download through the server is truncated")

        def direct_upload():
            s3.upload_file(source, BUCKET, "direct/big.bin")

        def direct_download():
            s3.download_file(BUCKET, "direct/big.bin", target)

        print(
            f"artifacts: {options.size_mib} MiB, {options.rounds} rounds, "
            f"server with {options.workers} workers, moto S3 on loopback"
        )
        memory = PeakRss(server.proc.pid)
        times: dict[str, list] = {
            name: []
            for name in ("server upload", "direct upload", "server download", "direct download")
        }
        ratios: dict[str, list] = {"upload": [], "download": []}
        for round_no in range(options.rounds):
            steps = [
                ("server upload", server_upload),
                ("direct upload", direct_upload),
                ("server download", server_download),
                ("direct download", direct_download),
            ]
            if round_no % 2:
                steps = [steps[1], steps[0], steps[3], steps[2]]
            for name, action in steps:
                times[name].append(timed(action))
            for kind in ("upload", "download"):
                ratios[kind].append(times[f"direct {kind}"][-1] / times[f"server {kind}"][-1])
            print(
                f"round {round_no + 1}: "
                + ", ".join(
                    f"{name} {size / 2**20 / t[-1]:.0f} MiB/s" for name, t in times.items()
                ),
                flush=True,
            )
        growth = memory.stop()
    finally:
        if server is not None:
            _support.stop_and_remove([server])
        moto.stop()
        shutil.rmtree(directory, ignore_errors=True)

    def rate(name):
        return f"{size / 2**20 / _support.median(times[name]):.0f}"

    print()
    _support.print_table(
        ["transfer", "through hokusai (MiB/s)", "direct boto3 (MiB/s)", "ratio server/direct"],
        [
            [
                kind,
                rate(f"server {kind}"),
                rate(f"direct {kind}"),
                f"{_support.median(ratios[kind]):.2f}x",
            ]
            for kind in ("upload", "download")
        ],
    )
    print(
        f"\nratio upload server/direct: {_support.median(ratios['upload']):.2f}x (target >= 0.8x)"
    )
    print(
        f"ratio download server/direct: {_support.median(ratios['download']):.2f}x (target >= 0.8x)"
    )
    print(f"server peak RSS growth: {growth / 2**20:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
