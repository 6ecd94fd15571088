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


def _artifact_root(server, key, name: str) -> str:
    """``EXP/RUN/artifacts`` of a new run in a new experiment ``name``, made with ``key``."""
    experiment = server.post("/api/2.0/mlflow/experiments/create", key, json={"name": name}).json()[
        "experiment_id"
    ]
    run = server.post("/api/2.0/mlflow/runs/create", key, json={"experiment_id": experiment})
    return f"{experiment}/{run.json()['run']['info']['run_id']}/artifacts"


def test_upload_through_the_server_streams_in_parts(moto, tmp_path):
    server = Server(
        str(tmp_path),
        workers=1,
        env=moto.server_env(),
        args=["--artifacts-destination", "s3://streaming/server"],
    ).start()
    try:
        key = server.create_key("streamer")
        root = _artifact_root(server, key, "streaming")
        big = os.urandom(2 * PART_SIZE + 1000)
        for name, body in (("big.bin", big), ("note.txt", b"small")):
            url = f"{server.url}/api/2.0/mlflow-artifacts/artifacts/{root}/{name}"
            headers = {"Authorization": f"Bearer {key}"}
            assert requests.put(url, data=body, headers=headers, timeout=120).status_code == 200
            assert requests.get(url, headers=headers, timeout=120).content == body
        prefix = f"server/{root}/"
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
    # RequestPayer: upload_file takes it, our multipart calls do not carry it.
    monkeypatch.setenv("MLFLOW_S3_UPLOAD_EXTRA_ARGS", '{"RequestPayer": "requester"}')
    used = []
    original = StreamingS3ArtifactRepository.log_artifact

    def recording(self, local_file, artifact_path=None):
        used.append(os.path.basename(local_file))
        return original(self, local_file, artifact_path)

    monkeypatch.setattr(StreamingS3ArtifactRepository, "log_artifact", recording)
    repository.log_artifact_from_stream(io.BytesIO(b"data"), "fallback.txt")
    assert used == ["fallback.txt"]
    assert moto.objects("direct/")["direct/fallback.txt"] == 4


def _checksums(moto, key) -> dict:
    head = moto.client().head_object(Bucket=moto.bucket, Key=key, ChecksumMode="ENABLED")
    return {name: value for name, value in head.items() if name.startswith("Checksum")}


@pytest.mark.parametrize("size", [1000, 2 * PART_SIZE + 1000], ids=["one-part", "multipart"])
def test_a_streamed_object_has_the_checksum_upload_file_gives_it(repository, moto, tmp_path, size):
    """boto3's upload_file (what MLflow's own upload does) asks S3 for a CRC32 of each part;
    the stream does the same, so both objects carry the same checksum."""
    body = os.urandom(size)
    local = tmp_path / "same.bin"
    local.write_bytes(body)
    repository.log_artifact(str(local), "by-mlflow")
    repository.log_artifact_from_stream(io.BytesIO(body), "same.bin", "streamed")
    by_mlflow = _checksums(moto, "direct/by-mlflow/same.bin")
    streamed = _checksums(moto, "direct/streamed/same.bin")
    assert "ChecksumCRC32" in by_mlflow
    assert streamed == by_mlflow
    got = moto.client().get_object(Bucket=moto.bucket, Key="direct/streamed/same.bin")
    assert got["Body"].read() == body


def test_a_checksum_algorithm_in_mlflows_extra_args_streams_with_it(repository, moto, monkeypatch):
    monkeypatch.setenv("MLFLOW_S3_UPLOAD_EXTRA_ARGS", '{"ChecksumAlgorithm": "SHA256"}')
    monkeypatch.setattr(
        StreamingS3ArtifactRepository,
        "log_artifact",
        lambda *a, **k: pytest.fail("a checksum algorithm needs no temporary file"),
    )
    body = os.urandom(PART_SIZE + 10)
    repository.log_artifact_from_stream(io.BytesIO(body), "sha.bin")
    checksums = _checksums(moto, "direct/sha.bin")
    assert "ChecksumSHA256" in checksums and "ChecksumCRC32" not in checksums
    got = moto.client().get_object(Bucket=moto.bucket, Key="direct/sha.bin")["Body"].read()
    assert got == body


@pytest.mark.parametrize(
    ("calculation", "extra", "expected"),
    [
        ("when_supported", {}, {"ChecksumAlgorithm": "CRC32"}),
        ("when_supported", {"ChecksumAlgorithm": "SHA1"}, {"ChecksumAlgorithm": "SHA1"}),
        ("when_required", {}, {}),
    ],
)
def test_the_checksum_follows_the_s3_clients_setting_as_upload_file_does(
    calculation, extra, expected
):
    import boto3
    from botocore.config import Config

    from mlflow_hokusai.artifacts.s3_streaming import _with_default_checksum

    client = boto3.client(
        "s3",
        region_name="us-east-1",
        config=Config(request_checksum_calculation=calculation),
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    assert _with_default_checksum(client, extra) == expected


# -- downloads ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def download_server(moto, tmp_path_factory):
    """One worker; users may read only what they own or were granted (NO_PERMISSIONS)."""
    config = tmp_path_factory.mktemp("downloads-config") / "hokusai.ini"
    config.write_text("[mlflow]\ndefault_permission = NO_PERMISSIONS\n")
    server = Server(
        str(tmp_path_factory.mktemp("downloads")),
        workers=1,
        env=moto.server_env(HOKUSAI_CONFIG=str(config)),
        args=["--artifacts-destination", "s3://streaming/downloads"],
    ).start()
    key = server.create_key("downloader")
    yield server, key, _artifact_root(server, key, "downloads")
    server.stop()


def _put(server, key, root, name, body):
    url = f"{server.url}/api/2.0/mlflow-artifacts/artifacts/{root}/{name}"
    response = requests.put(url, data=body, headers={"Authorization": f"Bearer {key}"}, timeout=120)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "base", ["/api/2.0", "/ajax-api/2.0", "/api/mlflow/api/2.0", "/api/mlflow/ajax-api/2.0"]
)
def test_a_download_streams_from_s3_with_its_length(download_server, base):
    """The first bytes leave before the object is fetched whole; Content-Length says how many
    follow (MLflow's handler sends none), the headers are otherwise MLflow's."""
    server, key, root = download_server
    body = os.urandom(3 * PART_SIZE + 12345)
    _put(server, key, root, "streamed.bin", body)
    url = f"{server.url}{base}/mlflow-artifacts/artifacts/{root}/streamed.bin"
    with requests.get(
        url, headers={"Authorization": f"Bearer {key}"}, stream=True, timeout=120
    ) as r:
        assert r.status_code == 200, r.text
        assert r.headers["Content-Length"] == str(len(body))
        assert r.headers["Content-Type"] == "application/octet-stream"
        assert r.headers["Content-Disposition"] == "attachment; filename=streamed.bin"
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert b"".join(r.iter_content(1 << 20)) == body


def test_a_small_text_download_keeps_mlflows_type(download_server):
    server, key, root = download_server
    _put(server, key, root, "notes/readme.txt", b"hello")
    response = server.get(f"/api/2.0/mlflow-artifacts/artifacts/{root}/notes/readme.txt", key)
    assert response.status_code == 200 and response.content == b"hello"
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.headers["Content-Length"] == "5"


def test_a_missing_artifact_is_404_and_a_directory_400(download_server):
    server, key, root = download_server
    _put(server, key, root, "folder/inside.txt", b"x")
    missing = server.get(f"/api/2.0/mlflow-artifacts/artifacts/{root}/no-such.bin", key)
    assert missing.status_code == 404, missing.text
    assert missing.json() == {
        "error_code": "RESOURCE_DOES_NOT_EXIST",
        "message": f"No artifact at '{root}/no-such.bin'.",
    }
    folder = server.get(f"/api/2.0/mlflow-artifacts/artifacts/{root}/folder", key)
    assert folder.status_code == 400, folder.text
    assert folder.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "refers to a directory, not a file" in folder.json()["message"]


def test_a_download_still_needs_read_permission(download_server):
    server, key, root = download_server
    _put(server, key, root, "private.bin", b"secret")
    other = server.create_key("someone-else")
    url = f"/api/2.0/mlflow-artifacts/artifacts/{root}/private.bin"
    refused = server.get(url, other)
    assert refused.status_code == 403, refused.text
    assert b"secret" not in refused.content
    assert server.get(url).status_code == 401  # no key


def test_a_client_that_goes_away_leaves_the_server_serving(download_server):
    server, key, root = download_server
    body = os.urandom(6 * PART_SIZE)
    _put(server, key, root, "abandoned.bin", body)
    url = f"{server.url}/api/2.0/mlflow-artifacts/artifacts/{root}/abandoned.bin"
    for _ in range(3):
        with requests.get(url, headers={"Authorization": f"Bearer {key}"}, stream=True) as r:
            assert len(r.raw.read(1 << 20)) == 1 << 20  # then close with most of it unread
    whole = requests.get(url, headers={"Authorization": f"Bearer {key}"}, timeout=120)
    assert whole.content == body


def test_s3_failing_mid_download_is_an_error_not_a_short_file(tmp_path):
    """Once the response has started, a failed transfer cannot become an error status: the
    response ends short of its Content-Length, which every HTTP client reports."""
    s3 = MotoS3("failing").start()
    server = Server(
        str(tmp_path),
        workers=1,
        env=s3.server_env(AWS_MAX_ATTEMPTS="1"),
        args=["--artifacts-destination", "s3://failing/artifacts"],
    ).start()
    try:
        key = server.create_key("unlucky")
        root = _artifact_root(server, key, "failing")
        body = os.urandom(40 * PART_SIZE)  # 320 MiB: far more than is in flight at once
        _put(server, key, root, "big.bin", body)
        url = f"{server.url}/api/2.0/mlflow-artifacts/artifacts/{root}/big.bin"
        with requests.get(url, headers={"Authorization": f"Bearer {key}"}, stream=True) as r:
            assert r.status_code == 200
            received = len(r.raw.read(1 << 20))
            s3.stop()
            with pytest.raises(requests.exceptions.RequestException):
                for chunk in r.iter_content(1 << 20):
                    received += len(chunk)
        assert received < len(body)
        assert server.get("/api/2.0/mlflow/hokusai/whoami", key).status_code == 200
    finally:
        server.stop()
        s3.stop()
