"""Proxied uploads stream to S3 in parts (no temporary copy), and behave as MLflow's otherwise.

moto's S3 server on loopback, reached over HTTP by boto3, both through a real server and
through the repository directly.
"""

import asyncio
import io
import os

import pytest
import requests

from mlflow_hokusai.artifacts.s3_streaming import PART_SIZE, StreamingS3ArtifactRepository
from tests.s3 import MotoS3
from tests.server import Server


@pytest.fixture(scope="module")
def moto():
    s3 = MotoS3("streaming").start()
    yield s3
    s3.stop()


@pytest.fixture
def repository(moto, monkeypatch):
    for name, value in moto.server_env().items():
        monkeypatch.setenv(name, value)
    return StreamingS3ArtifactRepository("s3://streaming/direct")


def _head(moto, key):
    return moto.client().head_object(Bucket=moto.bucket, Key=key)


def test_upload_through_the_server_streams_in_parts(moto, tmp_path):
    server = Server(
        str(tmp_path),
        workers=1,
        env=moto.server_env(),
        args=["--artifacts-destination", "s3://streaming/server"],
    ).start()
    try:
        key = server.create_key("streamer")
        experiment = server.post(
            "/api/2.0/mlflow/experiments/create", key, json={"name": "streaming"}
        ).json()["experiment_id"]
        run = server.post("/api/2.0/mlflow/runs/create", key, json={"experiment_id": experiment})
        run_id = run.json()["run"]["info"]["run_id"]
        big = os.urandom(2 * PART_SIZE + 1000)
        for name, body in (("big.bin", big), ("note.txt", b"small")):
            run_root = f"{server.url}/api/2.0/mlflow-artifacts/artifacts/{experiment}/{run_id}"
            url = f"{run_root}/artifacts/{name}"
            headers = {"Authorization": f"Bearer {key}"}
            assert requests.put(url, data=body, headers=headers, timeout=120).status_code == 200
            assert requests.get(url, headers=headers, timeout=120).content == body
        prefix = f"server/{experiment}/{run_id}/artifacts/"
        assert _head(moto, prefix + "big.bin")["ETag"].endswith('-3"')  # three parts
        note = _head(moto, prefix + "note.txt")
        assert "-" not in note["ETag"] and note["ContentType"] == "text/plain"
    finally:
        server.stop()


def test_async_stream_upload(repository, moto):
    body = os.urandom(PART_SIZE + 10)

    async def chunks():
        for start in range(0, len(body), 300_000):
            yield body[start : start + 300_000]

    asyncio.run(repository.log_artifact_from_async_stream(chunks(), "model.pkl", "sub"))
    got = moto.client().get_object(Bucket=moto.bucket, Key="direct/sub/model.pkl")["Body"].read()
    assert got == body


def test_a_failing_stream_leaves_no_object_and_no_open_upload(repository, moto):
    class Broken(io.RawIOBase):
        sent = 0

        def read(self, size=-1):
            if self.sent > PART_SIZE * 2:
                raise ConnectionResetError("client went away")
            self.sent += size
            return b"x" * size

    with pytest.raises(ConnectionResetError):
        repository.log_artifact_from_stream(Broken(), "broken.bin")
    client = moto.client()
    assert "direct/broken.bin" not in moto.objects("direct/")
    uploads = client.list_multipart_uploads(Bucket=moto.bucket).get("Uploads", [])
    assert [u for u in uploads if u["Key"] == "direct/broken.bin"] == []


def test_settings_multipart_cannot_carry_fall_back_to_mlflows_upload(repository, moto, monkeypatch):
    monkeypatch.setenv("MLFLOW_S3_UPLOAD_EXTRA_ARGS", '{"ChecksumAlgorithm": "SHA256"}')
    used = []
    original = StreamingS3ArtifactRepository.log_artifact

    def recording(self, local_file, artifact_path=None):
        used.append(os.path.basename(local_file))
        return original(self, local_file, artifact_path)

    monkeypatch.setattr(StreamingS3ArtifactRepository, "log_artifact", recording)
    repository.log_artifact_from_stream(io.BytesIO(b"data"), "fallback.txt")
    assert used == ["fallback.txt"]
    assert moto.objects("direct/")["direct/fallback.txt"] == 4
