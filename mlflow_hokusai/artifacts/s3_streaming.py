"""Proxied uploads to S3 that stream: parts go to S3 while the request body still arrives.

MLflow's upload handler spools a proxied upload to a temporary file and only then hands it to
boto3, so an upload through the server takes the client's transfer time plus the S3 transfer
time. MLflow streams instead when the artifact repository implements ``StreamUploadMixin``;
this S3 repository does: the body is cut into 8 MiB parts of a multipart upload, each sent by a
small thread pool as soon as it is full, at most ``MAX_IN_FLIGHT`` parts per upload held in
memory. Files smaller than one part go up in one ``PutObject``. Upload settings that the
multipart calls cannot carry the way ``upload_file`` does (anything beyond content type,
encoding, bucket owner, server-side encryption, ACL, storage class, metadata, tagging,
checksum algorithm) make it fall back to MLflow's temporary-file path, so behaviour never
differs from MLflow's.

Like ``upload_file`` (s3transfer, when the client's ``request_checksum_calculation`` is
``when_supported``, boto3's default), every part asks S3 to check and keep a CRC32, and the
completion names each part's checksum: the object gets the same checksum as one uploaded by
plain MLflow, and S3 assembles it without rereading the parts (moto's completion takes about
half the time; docs/performance.md).
"""

from __future__ import annotations

import asyncio
import logging
import os
import posixpath
import tempfile
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from mimetypes import guess_type

from mlflow_hokusai import _mlflow

_logger = logging.getLogger(__name__)
PART_SIZE = 8 * 1024 * 1024  # boto3's default multipart chunk size
MAX_IN_FLIGHT = 6
READ_SIZE = 1024 * 1024
# ExtraArgs of upload_file that create_multipart_upload/put_object take under the same name.
_STREAMABLE_ARGS = frozenset(
    {
        "ContentType",
        "ContentEncoding",
        "ExpectedBucketOwner",
        "ServerSideEncryption",
        "SSEKMSKeyId",
        "SSEKMSEncryptionContext",
        "BucketKeyEnabled",
        "ACL",
        "StorageClass",
        "Metadata",
        "Tagging",
        "CacheControl",
        "ContentDisposition",
        "ContentLanguage",
        "ChecksumAlgorithm",
    }
)
_PARTS = ThreadPoolExecutor(max_workers=MAX_IN_FLIGHT, thread_name_prefix="hokusai-s3-part")


class _MultipartUpload:
    """One object written part by part; ``add`` returns at once, parts upload in threads."""

    def __init__(self, client, bucket: str, key: str, extra: dict):
        self.client, self.bucket, self.key = client, bucket, key
        self.extra = _with_default_checksum(client, extra)
        self.owner = {k: v for k, v in extra.items() if k == "ExpectedBucketOwner"}
        self.part_args = {
            k: v for k, v in self.extra.items() if k in ("ExpectedBucketOwner", "ChecksumAlgorithm")
        }
        algorithm = self.extra.get("ChecksumAlgorithm")
        self.part_checksum = f"Checksum{algorithm.upper()}" if algorithm else None
        self.pending: list[bytes] = []  # received, not yet a full part
        self.pending_size = 0
        self.parts: list[Future] = []
        self.in_flight: deque[Future] = deque()  # sent parts not known to be done, oldest first
        self.upload_id: str | None = None

    def will_send(self, chunk: bytes) -> bool:
        """True when adding ``chunk`` completes a part."""
        return self.pending_size + len(chunk) >= PART_SIZE

    def add(self, chunk: bytes) -> None:
        self.pending.append(chunk)
        self.pending_size += len(chunk)
        if self.pending_size < PART_SIZE:
            return
        data = b"".join(self.pending)  # one copy per part, not one per chunk
        offset = 0
        while len(data) - offset >= PART_SIZE:
            self._send(data if len(data) == PART_SIZE else data[offset : offset + PART_SIZE])
            offset += PART_SIZE
        rest = data[offset:]
        self.pending, self.pending_size = ([rest] if rest else []), len(rest)

    def oldest_pending(self) -> Future | None:
        """A part to wait for before reading more, when too many are held in memory."""
        while self.in_flight and self.in_flight[0].done():
            self.in_flight.popleft()
        return self.in_flight[0] if len(self.in_flight) >= MAX_IN_FLIGHT else None

    def _send(self, body: bytes) -> None:
        if self.upload_id is None:
            self.upload_id = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=self.key, **self.extra
            )["UploadId"]
        part = _PARTS.submit(
            self.client.upload_part,
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            PartNumber=len(self.parts) + 1,
            Body=body,
            **self.part_args,
        )
        self.parts.append(part)
        self.in_flight.append(part)

    def finish(self) -> None:
        rest = b"".join(self.pending)
        self.pending, self.pending_size = [], 0
        if self.upload_id is None:
            self.client.put_object(Bucket=self.bucket, Key=self.key, Body=rest, **self.extra)
            return
        if rest:
            self._send(rest)
        done = [
            self._completed(number, part.result())
            for number, part in enumerate(self.parts, start=1)
        ]
        self.client.complete_multipart_upload(
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": done},
            **self.owner,
        )

    def _completed(self, number: int, response: dict) -> dict:
        """A part as CompleteMultipartUpload lists it (s3transfer's ``UploadPartTask``)."""
        part = {"ETag": response["ETag"], "PartNumber": number}
        if self.part_checksum in response:
            part[self.part_checksum] = response[self.part_checksum]
        return part

    def abort(self) -> None:
        for part in self.parts:
            part.cancel()
        if self.upload_id is not None:
            try:
                self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, **self.owner
                )
            except Exception:  # the original error matters more; S3 lifecycle rules clean up
                _logger.warning("could not abort multipart upload of %s", self.key, exc_info=True)


def _with_default_checksum(client, extra: dict) -> dict:
    """``extra`` plus the checksum algorithm ``upload_file`` would add (s3transfer's
    ``TransferManager._add_operation_defaults``)."""
    extra = dict(extra)
    calculation = getattr(client.meta.config, "request_checksum_calculation", None)
    if calculation != "when_supported":
        return extra
    # Imported here, not at start-up: botocore's parsers cost every worker half a second.
    try:  # s3transfer >= 0.11 (boto3 >= 1.36), where upload_file asks for checksums by default
        from s3transfer.utils import set_default_checksum_algorithm
    except ImportError:  # older boto3: upload_file sends no checksum either
        return extra
    set_default_checksum_algorithm(extra)
    return extra


class StreamingS3ArtifactRepository(*_mlflow.s3_repository_bases()):
    """MLflow's S3 artifact repository with ``StreamUploadMixin``: a proxied upload's body is
    handed to it as it arrives."""

    def _upload_for(self, artifact_file_name: str, artifact_path: str | None):
        """The multipart upload for this artifact, or None when its settings need MLflow's
        own ``upload_file`` path."""
        bucket, key = _mlflow.s3_bucket_and_key(self)
        if artifact_path:
            key = posixpath.join(key, artifact_path)
        key = posixpath.join(key, posixpath.basename(artifact_file_name))
        extra: dict = {}
        guessed_type, guessed_encoding = guess_type(artifact_file_name)
        if guessed_type is not None:
            extra["ContentType"] = guessed_type
        if guessed_encoding is not None:
            extra["ContentEncoding"] = guessed_encoding
        extra.update(_mlflow.s3_upload_extra_args(self))
        if not _STREAMABLE_ARGS.issuperset(extra):
            return None
        return _MultipartUpload(_mlflow.s3_client(self), bucket, key, extra)

    def log_artifact_from_stream(self, stream, artifact_file_name, artifact_path=None):
        upload = self._upload_for(artifact_file_name, artifact_path)
        if upload is None:
            return self._spool_then_upload(
                iter(lambda: stream.read(READ_SIZE), b""), artifact_file_name, artifact_path
            )
        try:
            while chunk := stream.read(READ_SIZE):
                upload.add(chunk)
                if (pending := upload.oldest_pending()) is not None:
                    pending.result()
            upload.finish()
        except BaseException:
            upload.abort()
            raise

    async def log_artifact_from_async_stream(self, chunks, artifact_file_name, artifact_path=None):
        upload = self._upload_for(artifact_file_name, artifact_path)
        if upload is None:
            spooled = await _spool(chunks)
            return await asyncio.to_thread(
                self._upload_spooled, spooled, artifact_file_name, artifact_path
            )
        try:
            async for chunk in chunks:
                if upload.upload_id is None and upload.will_send(chunk):
                    # The first part creates the multipart upload: a network call, off the loop.
                    await asyncio.to_thread(upload.add, chunk)
                else:
                    upload.add(chunk)
                if (pending := upload.oldest_pending()) is not None:
                    await asyncio.wrap_future(pending)
            await asyncio.to_thread(upload.finish)
        except BaseException:
            await asyncio.to_thread(upload.abort)
            raise

    def _spool_then_upload(self, chunks, artifact_file_name, artifact_path):
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, posixpath.basename(artifact_file_name))
            with open(path, "wb") as handle:
                for chunk in chunks:
                    handle.write(chunk)
            self.log_artifact(path, artifact_path)

    def _upload_spooled(self, spooled_path, artifact_file_name, artifact_path):
        try:
            with tempfile.TemporaryDirectory() as directory:
                path = os.path.join(directory, posixpath.basename(artifact_file_name))
                os.replace(spooled_path, path)
                self.log_artifact(path, artifact_path)
        finally:
            if os.path.exists(spooled_path):
                os.remove(spooled_path)


async def _spool(chunks) -> str:
    """Write an async chunk stream to a temporary file; return its path."""
    handle = tempfile.NamedTemporaryFile(delete=False)
    try:
        async for chunk in chunks:
            await asyncio.to_thread(handle.write, chunk)
    except BaseException:
        handle.close()
        os.remove(handle.name)
        raise
    handle.close()
    return handle.name


def install() -> None:
    """Serve ``s3://`` artifact destinations with the streaming repository in this worker."""
    _mlflow.patches.use_artifact_repository("s3", StreamingS3ArtifactRepository)
