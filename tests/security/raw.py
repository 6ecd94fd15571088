"""Raw HTTP for the security suite: request targets and header bytes exactly as written.

``requests`` normalises paths (``..``, ``//``, percent-encodings) and refuses odd headers; an
attacker's client does not, so these tests speak HTTP/1.1 over a plain socket.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field


@dataclass
class Reply:
    status: int
    headers: dict = field(default_factory=dict)  # lower-case names
    body: bytes = b""

    def json(self):
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def send(
    url: str,
    method: str,
    target: str,
    headers: list[tuple[str, bytes | str]] = (),
    body: bytes = b"",
    timeout: float = 30.0,
    source: str | None = None,
) -> Reply:
    """Send one request with ``target`` verbatim on the request line; read the whole reply.
    ``source``: the loopback address to send from (127.0.0.2 is another peer than 127.0.0.1)."""
    host, port = url.split("//", 1)[1].split(":")
    lines = [f"{method} {target} HTTP/1.1".encode("latin-1"), f"Host: {host}:{port}".encode()]
    for name, value in headers:
        value = value if isinstance(value, bytes) else value.encode("latin-1")
        lines.append(name.encode() + b": " + value)
    lines.append(b"Connection: close")
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(b"Content-Type: application/json")
        lines.append(f"Content-Length: {len(body)}".encode())
    raw = b"\r\n".join(lines) + b"\r\n\r\n" + body
    bind = (source, 0) if source else None
    with socket.create_connection((host, int(port)), timeout=timeout, source_address=bind) as sock:
        sock.sendall(raw)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return _parse(b"".join(chunks), method)


def _parse(data: bytes, method: str) -> Reply:
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.decode("latin-1").strip().lower()] = value.decode("latin-1").strip()
    if method == "HEAD":
        return Reply(status, headers, b"")
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body, rest_data = b"", rest
        while rest_data:
            size_line, _, rest_data = rest_data.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            body += rest_data[:size]
            rest_data = rest_data[size + 2 :]
        return Reply(status, headers, body)
    return Reply(status, headers, rest)
