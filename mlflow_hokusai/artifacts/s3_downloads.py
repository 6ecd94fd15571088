"""Proxied downloads from S3 that stream: bytes go to the client while they still arrive.

MLflow's download handler fetches the whole object to a temporary file (boto3's
``download_file``: parallel ranged GETs) and only then sends its first byte, so a download
through the server takes the S3 transfer time plus the client's, and needs the artifact's size
in free disk. ``open_stream`` runs the same transfer (boto3's transfer manager, its default
settings, ten ranged GETs at a time) into a pipe instead of a file: s3transfer writes the parts
in order as they complete, the response sends each piece as soon as it is written.

- Memory is bounded: at most ``MAX_QUEUED`` pieces (256 KiB each, s3transfer's I/O size) wait
  for the client, and a slow client holds back the transfer rather than filling memory.
- The response carries ``Content-Length`` (from one ``HeadObject``), so a transfer that fails
  half way ends the response short and the client sees an error, never a silently truncated
  file.
- A client that goes away stops the transfer.

Only an object that exists streams. A missing one is a 404 and a directory a 400
(``HokusaiError``; MLflow's handler answers both with a 500); when S3 refuses the first
request, ``open_stream`` returns None and MLflow's own handler answers, with its own errors.
"""

from __future__ import annotations

import asyncio
import posixpath
import threading
from typing import NamedTuple

from mlflow_hokusai import _mlflow
from mlflow_hokusai.artifacts.s3_streaming import StreamingS3ArtifactRepository
from mlflow_hokusai.errors import HokusaiError

MAX_QUEUED = 64  # pieces of 256 KiB: 16 MiB waiting for a slow client, at most
_DONE = object()


class DownloadStream(NamedTuple):
    size: int
    chunks: object  # an async iterator of bytes


class _ClientGone(Exception):
    """Raised in s3transfer's writer thread to stop the transfer once nobody reads."""


class _Pipe:
    """The file object s3transfer writes to, in its I/O thread; the event loop reads it."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.queue: asyncio.Queue = asyncio.Queue()
        self.room = threading.Semaphore(MAX_QUEUED)
        self.closed = threading.Event()

    def write(self, data: bytes) -> int:
        while not self.room.acquire(timeout=0.5):
            if self.closed.is_set():
                raise _ClientGone
        if self.closed.is_set():
            raise _ClientGone
        self.loop.call_soon_threadsafe(self.queue.put_nowait, bytes(data))
        return len(data)

    def end(self, outcome) -> None:
        """From any thread: ``_DONE`` or the exception the transfer ended with."""
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.queue.put_nowait, outcome)

    async def chunks(self):
        try:
            while True:
                item = await self.queue.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                self.room.release()
                yield item
        finally:
            self.closed.set()


def _object_size(client, bucket: str, key: str, owner: dict, artifact_path: str) -> int | None:
    """The object's size; None when S3 refuses the question (MLflow's handler answers it).
    A missing object is a 404, a prefix with objects under it a 400 (MLflow answers both
    with a 500)."""
    from botocore.exceptions import ClientError  # not at start-up (half a second per worker)

    try:
        return client.head_object(Bucket=bucket, Key=key, **owner)["ContentLength"]
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey"):
            return None
    listed = client.list_objects_v2(Bucket=bucket, Prefix=key.rstrip("/") + "/", MaxKeys=1, **owner)
    if listed.get("KeyCount", 0):
        raise HokusaiError(
            "INVALID_PARAMETER_VALUE",
            f"Artifact path refers to a directory, not a file: '{artifact_path}'. "
            "List it with GET /api/2.0/mlflow-artifacts/artifacts?path=….",
        )
    raise HokusaiError("RESOURCE_DOES_NOT_EXIST", f"No artifact at '{artifact_path}'.", 404)


async def open_stream(repository, artifact_path: str) -> DownloadStream | None:
    """Stream ``artifact_path`` of an S3 ``repository``, or None to leave it to MLflow."""
    if not isinstance(repository, StreamingS3ArtifactRepository):
        return None
    bucket, root = _mlflow.s3_bucket_and_key(repository)
    key = posixpath.join(root, artifact_path)
    client = _mlflow.s3_client(repository)
    owner = _mlflow.s3_bucket_owner_args(repository)
    size = await asyncio.to_thread(_object_size, client, bucket, key, owner, artifact_path)
    if size is None:
        return None
    pipe = _Pipe(asyncio.get_running_loop())

    def transfer():
        try:
            client.download_fileobj(bucket, key, pipe, ExtraArgs=owner or None)
        except BaseException as error:  # noqa: BLE001 - handed to the response, which raises it
            pipe.end(error)
        else:
            pipe.end(_DONE)

    threading.Thread(target=transfer, name="hokusai-s3-download", daemon=True).start()
    return DownloadStream(size, pipe.chunks())
