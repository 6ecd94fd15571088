"""MLflow's artifact path-traversal CVEs, replayed through our routes and our prefix with a
valid key: each must still fail, and no file outside the artifact root may be read or written.

Cases from MLflow's history: ``/get-artifact?path=../..`` (GHSA for issue 7166), ``..`` and
encoded ``..`` in mlflow-artifacts paths (CVE-2023-1177 family), absolute paths, ``#`` and ``?``
in artifact locations (CVE-2023-6909, CVE-2024-3848, CVE-2024-1483, PR 10653), ``;`` in URIs
(PR 11473), model-version ``source`` pointing at the server's files (CVE-2024-1558), double
encoding (``%252e``) and backslashes.
"""

import time
import uuid

import pytest

from tests.security.raw import send

CANARY = f"canary-{uuid.uuid4().hex}"
PREFIXES = ["", "/api/mlflow"]


@pytest.fixture(scope="module")
def target(server, tmp_path_factory):
    """A user with a key, an experiment and run of their own, and a canary file outside the
    artifact root (the server's working directory holds ./mlartifacts)."""
    (server.workdir / "canary-secret.txt").write_text(CANARY)
    key = server.create_key("traversal-user")
    auth = [("Authorization", f"Bearer {key}")]
    created = send(
        server.url,
        "POST",
        "/api/2.0/mlflow/experiments/create",
        auth,
        body=f'{{"name": "traversal-{time.time_ns()}"}}'.encode(),
    )
    experiment_id = created.json()["experiment_id"]
    run = send(
        server.url,
        "POST",
        "/api/2.0/mlflow/runs/create",
        auth,
        body=f'{{"experiment_id": "{experiment_id}"}}'.encode(),
    ).json()["run"]["info"]
    return auth, experiment_id, run["run_id"]


def _leaks(reply) -> bool:
    return CANARY.encode() in reply.body or b"root:x:0:0" in reply.body


def _check(reply, what):
    assert reply.status != 500, (what, reply.text[:300])
    assert not _leaks(reply), (what, reply.status, reply.text[:300])


def test_reads_outside_the_artifact_root_fail(server, target):
    auth, experiment_id, run_id = target
    base = f"{experiment_id}/{run_id}/artifacts"
    up = "../" * 3  # from <exp>/<run>/artifacts back to ./mlartifacts
    traversals = [
        f"{base}/{up}../canary-secret.txt",
        f"{base}/..%2f..%2f..%2f..%2fcanary-secret.txt",
        f"{base}/%2e%2e/%2e%2e/%2e%2e/%2e%2e/canary-secret.txt",
        f"{base}/%252e%252e/%252e%252e/%252e%252e/%252e%252e/canary-secret.txt",
        f"{base}/..%5c..%5c..%5c..%5ccanary-secret.txt",
        "..%2fcanary-secret.txt",
        "../canary-secret.txt",
        "%2e%2e/canary-secret.txt",
        "/etc/passwd",
        "%2fetc%2fpasswd",
        "//etc/passwd",
        f"{base}/x%23/../../../../../canary-secret.txt",
        f"{base}/x%3f/../../../../../canary-secret.txt",
        f"{base}/x;/../../../../../canary-secret.txt",
    ]
    outcomes = []
    for prefix in PREFIXES:
        for api in ("/api/2.0", "/ajax-api/2.0"):
            for path in traversals:
                for route in ("artifacts", "presigned"):
                    target_path = f"{prefix}{api}/mlflow-artifacts/{route}/{path}"
                    reply = send(server.url, "GET", target_path, auth)
                    _check(reply, target_path)
                    outcomes.append(reply.status)
            for query in [
                f"path={up}../canary-secret.txt&run_id={run_id}",
                f"path=..%2f..%2f..%2f..%2fcanary-secret.txt&run_id={run_id}",
                f"path=/etc/passwd&run_id={run_id}",
                f"path=%2fetc%2fpasswd&run_id={run_id}",
                f"path=x%23/../../../../canary-secret.txt&run_id={run_id}",
            ]:
                for route in (f"{api}/mlflow/artifacts/list", "/get-artifact"):
                    if "get-artifact" in route:
                        target_path = f"{prefix}{route}?{query.replace('run_id', 'run_uuid')}"
                    else:
                        target_path = f"{prefix}{route}?{query}"
                    reply = send(server.url, "GET", target_path, auth)
                    _check(reply, target_path)
                    outcomes.append(reply.status)
                    if reply.status == 200 and "artifacts/list" in route:
                        assert "canary-secret.txt" not in reply.text, target_path
    print(f"\n{len(outcomes)} traversal reads refused: statuses {sorted(set(outcomes))}")


def test_unrouted_artifact_requests_get_the_routing_answer(server, target):
    """Requests under the artifact API that no route matches: Flask's 308 (to the merged-slash
    path), 404 or 405. MLflow < 3.17 authorized them by reading ``view_args`` (None): a 500."""
    auth, experiment_id, _ = target
    for prefix in PREFIXES:
        for api in ("/api/2.0", "/ajax-api/2.0"):
            for method, rest in [
                ("GET", "presigned/"),
                ("GET", "presigned//etc/passwd"),
                ("POST", f"presigned/{experiment_id}/x"),
                ("DELETE", "artifacts//etc/passwd"),
                ("PATCH", f"artifacts/{experiment_id}/x"),
                ("GET", "artifactsX"),
                ("GET", "mpu/nothing"),
                ("POST", "mpu/create//etc/x"),
            ]:
                target_path = f"{prefix}{api}/mlflow-artifacts/{rest}"
                body = b"{}" if method in ("POST", "PATCH") else b""
                reply = send(server.url, method, target_path, auth, body=body)
                assert reply.status in (308, 404, 405), (
                    method,
                    target_path,
                    reply.status,
                    reply.text[:200],
                )


def test_writes_outside_the_artifact_root_fail(server, target):
    auth, experiment_id, run_id = target
    base = f"{experiment_id}/{run_id}/artifacts"
    names = []
    for prefix in PREFIXES:
        for path in [
            f"{base}/../../../../written-{{}}.txt",
            f"{base}/..%2f..%2f..%2f..%2fwritten-{{}}.txt",
            "..%2fwritten-{}.txt",
            "%2e%2e/written-{}.txt",
        ]:
            name = uuid.uuid4().hex[:8]
            names.append(name)
            target_path = f"{prefix}/api/2.0/mlflow-artifacts/artifacts/{path.format(name)}"
            reply = send(server.url, "PUT", target_path, auth, body=b"owned")
            assert reply.status != 500 and not 200 <= reply.status < 300, (
                target_path,
                reply.status,
            )
            mpu = f"{prefix}/api/2.0/mlflow-artifacts/mpu/create/{path.format(name)}"
            reply = send(server.url, "POST", mpu, auth, body=b'{"path": "x", "num_parts": 1}')
            assert reply.status != 500 and not 200 <= reply.status < 300, (mpu, reply.status)
    for name in names:
        assert not list(server.workdir.rglob(f"written-{name}.txt")), name


@pytest.mark.parametrize("prefix", PREFIXES)
def test_artifact_locations_and_sources_that_point_outside_fail(server, target, prefix):
    auth, experiment_id, run_id = target
    accepted = []
    for location, must_refuse in [
        ("http:///#/../../../../../../../../etc/", True),  # CVE-2023-6909 / CVE-2024-1483
        ("file:///tmp#/../../etc/", True),  # CVE-2024-3848
        ("file:///tmp?x=/../../etc/", True),  # PR 10653: '..' in the query
        ("file:///tmp;/../../etc/", False),  # PR 11473: ';' — allowed, but must lead nowhere
        ("mlflow-artifacts:/../../../etc", False),
    ]:
        name = f"loc-{uuid.uuid4().hex[:8]}"
        reply = send(
            server.url,
            "POST",
            f"{prefix}/ajax-api/2.0/mlflow/experiments/create",
            auth,
            body=f'{{"name": "{name}", "artifact_location": "{location}"}}'.encode(),
        )
        _check(reply, location)
        if must_refuse:
            assert reply.status in (400, 403), (location, reply.status, reply.text[:200])
        elif reply.status == 200:
            accepted.append((location, reply.json()["experiment_id"]))
    # An experiment whose location MLflow accepted: its runs' artifacts still cannot be used to
    # read the server's files.
    for location, exp_id in accepted:
        created = send(
            server.url,
            "POST",
            f"{prefix}/api/2.0/mlflow/runs/create",
            auth,
            body=f'{{"experiment_id": "{exp_id}"}}'.encode(),
        )
        _check(created, (location, "runs/create"))
        if created.status != 200:
            print(
                f"\nruns/create in an experiment at {location!r}: {created.status} "
                f"{created.text[:200]}"
            )
            continue
        run = created.json()["run"]["info"]
        for path in ["passwd", "../passwd", "../../../../etc/passwd", "../../canary-secret.txt"]:
            for probe in [
                f"{prefix}/get-artifact?path={path}&run_uuid={run['run_id']}",
                f"{prefix}/api/2.0/mlflow/artifacts/list?run_id={run['run_id']}&path={path}",
            ]:
                reply = send(server.url, "GET", probe, auth)
                _check(reply, (location, probe))
                if reply.status == 200 and "list" in probe:
                    assert "shadow" not in reply.text and "canary" not in reply.text, probe
    model = f"traversal-model-{uuid.uuid4().hex[:8]}"
    created = send(
        server.url,
        "POST",
        f"{prefix}/api/2.0/mlflow/registered-models/create",
        auth,
        body=f'{{"name": "{model}"}}'.encode(),
    )
    assert created.status == 200, created.text
    for source in [
        "file:///etc/",
        "/etc",
        f"{server.workdir}",
        "file:///etc/#/../",
        f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts/../../../../../etc",
    ]:
        reply = send(
            server.url,
            "POST",
            f"{prefix}/api/2.0/mlflow/model-versions/create",
            auth,
            body=f'{{"name": "{model}", "source": "{source}", "run_id": "{run_id}"}}'.encode(),
        )
        _check(reply, source)
        assert reply.status in (400, 403), (source, reply.status, reply.text[:200])
    for path in ["passwd", "../../../../etc/passwd", "/etc/passwd", "canary-secret.txt"]:
        reply = send(
            server.url,
            "GET",
            f"{prefix}/model-versions/get-artifact?path={path}&name={model}&version=1",
            auth,
        )
        _check(reply, path)
        assert not 200 <= reply.status < 300, (path, reply.status)
