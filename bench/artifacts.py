"""Artifact upload and download: our server vs plain MLflow's proxy vs boto3 direct, one S3.

Starts moto's S3 server, ``mlflow server --app-name hokusai`` and a plain ``mlflow server``
(both with ``--artifacts-destination s3://BUCKET/…`` and ``MLFLOW_S3_ENDPOINT_URL`` pointing at
moto, the same worker count), all on 127.0.0.1. A file of ``--size-mib`` MiB is uploaded and
downloaded in interleaved rounds (the order rotates every round):

- through our server's proxied artifact API with a non-admin key (``PUT``/``GET
  /api/2.0/mlflow-artifacts/artifacts/EXP/RUN/artifacts/FILE``, streamed the way the MLflow
  client does it);
- the same through the plain MLflow server (no key);
- straight to the endpoint with boto3 (``upload_file``/``download_file``, the default transfer
  settings, as MLflow's S3 repository uses).

Prints the median MiB/s of each, the median per-round ratios (ours / plain MLflow: target
>= 1.0; ours / boto3: target >= 0.8) and, for each server, the largest growth of its process
tree's resident memory during one upload and during one download, over the level just before
it. Then one file of ``--memory-mib`` MiB goes up through our server alone, and the growth
during that upload is printed (target: <= 150 MiB for 1 GiB); moto is slow to serve objects
that large back, so the rounds use the smaller file.

    python bench/artifacts.py [--size-mib 256] [--rounds 3] [--workers 2] [--memory-mib 1024]
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
TARGETS = ("hokusai", "plain MLflow", "boto3 direct")


class PeakRss:
    """Samples the resident memory of a process tree in the background; ``stop`` returns the
    peak above the level at start."""

    def __init__(self, pid: int, interval: float = 0.02):
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
        self.peak = max(self.peak, _support.tree_rss_bytes(self.pid))
        return self.peak - self.baseline


def timed(action, pid: int | None, growth: list) -> float:
    """Seconds ``action`` took; with a ``pid``, appends that tree's memory growth meanwhile."""
    memory = PeakRss(pid) if pid is not None else None
    started = time.perf_counter()
    action()
    seconds = time.perf_counter() - started
    if memory is not None:
        growth.append(memory.stop())
    return seconds


class ProxiedArtifact:
    """Upload and download of one artifact through a server's ``mlflow-artifacts`` proxy."""

    def __init__(self, server, headers: dict, source: str, target: str, label: str):
        self.source, self.target = source, target
        self.session = requests.Session()
        self.session.headers.update(headers)
        api = server.url + "/api/2.0/mlflow"
        experiment = self._post(api + "/experiments/create", {"name": f"bench-{label}"})
        run = self._post(api + "/runs/create", {"experiment_id": experiment["experiment_id"]})
        self.url = (
            f"{server.url}/api/2.0/mlflow-artifacts/artifacts/"
            f"{experiment['experiment_id']}/{run['run']['info']['run_id']}/artifacts/big.bin"
        )

    def _post(self, url: str, body: dict) -> dict:
        response = self.session.post(url, json=body, timeout=60)
        response.raise_for_status()
        return response.json()

    def upload(self) -> None:
        with open(self.source, "rb") as handle:
            self.session.put(self.url, data=handle, timeout=600).raise_for_status()

    def download(self) -> None:
        with self.session.get(self.url, stream=True, timeout=600) as response:
            response.raise_for_status()
            with open(self.target, "wb") as handle:
                for chunk in response.iter_content(CHUNK):
                    handle.write(chunk)
        if os.path.getsize(self.target) != os.path.getsize(self.source):
            raise RuntimeError(f"download from {self.url} is truncated")


class DirectArtifact:
    def __init__(self, s3, source: str, target: str):
        self.s3, self.source, self.target = s3, source, target

    def upload(self) -> None:
        self.s3.upload_file(self.source, BUCKET, "direct/big.bin")

    def download(self) -> None:
        self.s3.download_file(BUCKET, "direct/big.bin", self.target)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-mib", type=int, default=1024, help="0: skip")
    options = parser.parse_args(argv)

    directory = tempfile.mkdtemp(prefix="hokusai-bench-artifacts-")
    source = os.path.join(directory, "source.bin")
    with open(source, "wb") as handle:
        for _ in range(options.size_mib):
            handle.write(os.urandom(CHUNK))
    size_mib = os.path.getsize(source) / 2**20
    target = os.path.join(directory, "downloaded.bin")

    moto = MotoS3(BUCKET).start()
    servers = []
    try:
        ours = _support.hokusai_server(
            workers=options.workers,
            args=["--artifacts-destination", f"s3://{BUCKET}/hokusai"],
            env=moto.server_env(),
        )
        plain = _support.plain_server(
            workers=options.workers,
            args=["--artifacts-destination", f"s3://{BUCKET}/plain"],
            env=moto.server_env(),
        )
        servers = [ours, plain]
        _support.start_all(servers)
        key = ours.create_key("bench-user")
        transfers = {
            "hokusai": ProxiedArtifact(
                ours, {"Authorization": f"Bearer {key}"}, source, target, "hokusai"
            ),
            "plain MLflow": ProxiedArtifact(plain, {}, source, target, "plain"),
            "boto3 direct": DirectArtifact(moto.client(), source, target),
        }
        print(
            f"artifacts: {options.size_mib} MiB, {options.rounds} rounds, "
            f"servers with {options.workers} workers, moto S3 on loopback"
        )
        pids = {"hokusai": ours.proc.pid, "plain MLflow": plain.proc.pid}
        big_growth: list = []
        seconds = {(kind, name): [] for kind in ("upload", "download") for name in TARGETS}
        growth = {key: [] for key in seconds}
        for round_no in range(options.rounds):
            order = TARGETS[round_no % 3 :] + TARGETS[: round_no % 3]
            for kind in ("upload", "download"):
                for name in order:
                    action = getattr(transfers[name], kind)
                    took = timed(action, pids.get(name), growth[kind, name])
                    seconds[kind, name].append(took)
            print(
                f"round {round_no + 1}: "
                + ", ".join(
                    f"{name} {kind} {size_mib / t[-1]:.0f} MiB/s"
                    for (kind, name), t in seconds.items()
                ),
                flush=True,
            )
        if options.memory_mib:
            with open(source, "wb") as handle:
                for _ in range(options.memory_mib):
                    handle.write(os.urandom(CHUNK))
            took = timed(transfers["hokusai"].upload, ours.proc.pid, big_growth)
            print(f"one {options.memory_mib} MiB upload through hokusai: {took:.1f} s", flush=True)
    finally:
        _support.stop_and_remove(servers)
        moto.stop()
        shutil.rmtree(directory, ignore_errors=True)

    def ratio(kind, name, other):
        """Median of the per-round ratios: name's speed over other's."""
        pairs = zip(seconds[kind, other], seconds[kind, name], strict=True)
        return _support.median([theirs / mine for theirs, mine in pairs])

    print()
    _support.print_table(
        [
            "transfer",
            *(f"{name} (MiB/s)" for name in TARGETS),
            "hokusai / plain",
            "hokusai / boto3",
        ],
        [
            [
                kind,
                *(f"{size_mib / _support.median(seconds[kind, name]):.0f}" for name in TARGETS),
                f"{ratio(kind, 'hokusai', 'plain MLflow'):.2f}x",
                f"{ratio(kind, 'hokusai', 'boto3 direct'):.2f}x",
            ]
            for kind in ("upload", "download")
        ],
    )
    print()
    for kind, target_plain, target_direct in (("upload", 1.0, 0.8), ("download", 1.0, 0.8)):
        print(
            f"ratio {kind} hokusai/plain: {ratio(kind, 'hokusai', 'plain MLflow'):.2f}x "
            f"(target >= {target_plain}x); hokusai/boto3: "
            f"{ratio(kind, 'hokusai', 'boto3 direct'):.2f}x (target >= {target_direct}x); "
            f"plain/boto3: {ratio(kind, 'plain MLflow', 'boto3 direct'):.2f}x"
        )
    for name in pids:
        worst = {kind: max(growth[kind, name]) / 2**20 for kind in ("upload", "download")}
        print(
            f"{name} server, largest RSS growth during one transfer of {options.size_mib} MiB: "
            f"upload {worst['upload']:.0f} MiB, download {worst['download']:.0f} MiB"
        )
    if big_growth:
        print(
            f"hokusai server, RSS growth during one {options.memory_mib} MiB upload: "
            f"{big_growth[0] / 2**20:.0f} MiB (target <= 150 MiB for 1024 MiB)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
