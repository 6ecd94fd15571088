"""The public secret scanning endpoint, ``POST …/mlflow/hokusai/secret-scanning``: GitHub's
signed reports of leaked keys (``auth/secret_scanning.py`` decides).

The gate refuses a body declared larger than 1 MiB before reading it, and under uvicorn reads
at most that much of one sent without a length (``gate/paths.py``); here the read is capped
too, for WSGI servers.
"""

from __future__ import annotations

import json

from flask import Flask, Response, request

from mlflow_hokusai import _mlflow
from mlflow_hokusai.auth.addresses import ClientAddress
from mlflow_hokusai.auth.secret_scanning import (
    KEY_ID_HEADER,
    MAX_REPORT_BYTES,
    SIGNATURE_HEADER,
    SecretScanning,
    too_large,
)
from mlflow_hokusai.routes.services import Services

SCANNING = "/mlflow/hokusai/secret-scanning"


def _read_at_most(stream, size: int) -> bytes:
    """Up to ``size`` bytes of ``stream`` (a read may return less than asked)."""
    chunks, left = [], size
    while left > 0:
        chunk = stream.read(min(left, 64 * 1024))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def make_view(scanning: SecretScanning, addresses: ClientAddress):
    def secret_scanning():
        source = addresses.of(request.remote_addr, request.headers.getlist("X-Forwarded-For"))
        scanning.throttle(source)
        if (request.content_length or 0) > MAX_REPORT_BYTES:
            raise too_large()
        body = _read_at_most(request.stream, MAX_REPORT_BYTES + 1)
        answer = scanning.report(
            body,
            request.headers.get(KEY_ID_HEADER),
            request.headers.get(SIGNATURE_HEADER),
            source,
        )
        # In GitHub's field order (jsonify would sort them); it echoes the tokens: no-store.
        return Response(
            json.dumps(answer),
            mimetype="application/json",
            headers={"Cache-Control": "no-store"},
        )

    return secret_scanning


def install(app: Flask, services: Services) -> None:
    view = make_view(services.secret_scanning, ClientAddress(services.settings.trusted_proxies))
    for path in services.api_paths(SCANNING):
        app.add_url_rule(path, endpoint=f"hokusai:{path}", view_func=view, methods=["POST"])
    # The gate lets exactly these paths through without a key; MLflow's engine must too.
    _mlflow.patches.make_public([f"/{root}/2.0{SCANNING}" for root in ("api", "ajax-api")])
