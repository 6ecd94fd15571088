"""The ``hokusai`` auth plugin on a multipart artifact upload to S3 (moto's server): the
multipart calls to our server carry the key; the part uploads go to presigned URLs without it."""

import hashlib
import os

import mlflow
import pytest

from tests.helpers import api_key_for
from tests.s3 import MotoS3
from tests.server import Server

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    s3 = MotoS3().start()
    srv = Server(
        str(tmp_path_factory.mktemp("plugin-s3")),
        workers=1,
        env=s3.server_env(MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD="true"),
        args=["--artifacts-destination", f"s3://{s3.bucket}/plugin"],
    )
    try:
        srv.start()
        yield s3, srv
    finally:
        srv.stop()
        s3.stop()


def test_multipart_upload_and_download_with_only_hokusai_api_key(s3_server, monkeypatch, tmp_path):
    s3, srv = s3_server
    for name in list(os.environ):
        if name.startswith(("MLFLOW_", "HOKUSAI_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("MLFLOW_TRACKING_AUTH", "hokusai")
    monkeypatch.setenv("HOKUSAI_API_KEY", api_key_for(srv, "plugin-multipart"))
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD", "true")
    monkeypatch.setenv("MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE", str(6 * MiB))
    monkeypatch.setenv("MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE", str(5 * MiB))
    data = os.urandom(11 * MiB)
    (tmp_path / "big.bin").write_bytes(data)

    mlflow.set_tracking_uri(srv.url + "/api/mlflow")
    try:
        mlflow.set_experiment("plugin-multipart")
        with mlflow.start_run() as run:
            mlflow.log_artifact(str(tmp_path / "big.bin"))
        out = mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, artifact_path="big.bin", dst_path=str(tmp_path / "down")
        )
    finally:
        mlflow.set_tracking_uri(None)

    assert hashlib.sha256(open(out, "rb").read()).digest() == hashlib.sha256(data).digest()
    key = f"plugin/{run.info.experiment_id}/{run.info.run_id}/artifacts/big.bin"
    assert s3.objects(key) == {key: len(data)}
    log = srv.log_text()
    for step in ("create", "complete"):
        lines = [line for line in log.splitlines() if f"/mlflow-artifacts/mpu/{step}/" in line]
        assert lines and all("200" in line for line in lines), lines
