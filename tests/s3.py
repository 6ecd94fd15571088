"""An S3-compatible endpoint on loopback for tests and benchmarks: moto's server mode.

It runs as its own process (``python -m moto.server``), so the objects it keeps in memory and
the CPU it spends are not charged to the test process or to the MLflow server under test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

import boto3
import requests

from tests.server import free_port

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class MotoS3:
    def __init__(self, bucket: str = "hokusai-artifacts"):
        self.bucket = bucket
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> MotoS3:
        self.log = tempfile.TemporaryFile()
        env = {**os.environ, **CREDENTIALS}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {self.proc.returncode}")
            try:
                requests.get(self.endpoint + "/moto-api/", timeout=2)
                break
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise TimeoutError("moto server did not start") from None
                time.sleep(0.2)
        self.client().create_bucket(Bucket=self.bucket)
        return self

    def client(self):
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def server_env(self, **extra) -> dict:
        """What ``mlflow server --artifacts-destination s3://…`` needs to reach this endpoint."""
        return {**CREDENTIALS, "MLFLOW_S3_ENDPOINT_URL": self.endpoint, **extra}

    def objects(self, prefix: str = "") -> dict[str, int]:
        """Key -> size of every object under ``prefix``."""
        found = {}
        for page in (
            self.client()
            .get_paginator("list_objects_v2")
            .paginate(Bucket=self.bucket, Prefix=prefix)
        ):
            found.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
        return found

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if getattr(self, "log", None):
            self.log.close()
