"""What a user just created works on every worker at once: a refusal is decided on fresh data.

Each worker caches a user's grants for up to a second; only the worker that wrote a change
forgets its copy. A client that opens a new connection per request (the npm client, curl, most
HTTP libraries) spreads a create-then-use flow over the workers, so the "use" often lands on a
worker whose cached grants predate the create. Those requests must not be refused: before
answering 403 (or leaving a resource out of a listing) the engine re-reads what it decided on.

The flow runs on the shared two-worker server, and across two replicas in ``test_replicas.py``.
"""

from __future__ import annotations

import time
import uuid

import pytest
import requests

from tests.server import Server

API2 = "/api/2.0/mlflow"
ROUNDS = 30


def fresh_call(url: str, key: str, method: str, path: str, body=None):
    """One request on its own connection (so successive calls spread over the workers)."""
    headers = {"Authorization": f"Bearer {key}", "Connection": "close"}
    if method == "GET":
        return requests.get(url + path, params=body, headers=headers, timeout=60)
    return requests.request(method, url + path, json=body, headers=headers, timeout=60)


def create_then_use(create_on: str, use_on: str, key: str, rounds: int = ROUNDS) -> dict:
    """``rounds`` create-then-use flows: each warms the grants of ``use_on``'s workers, creates
    an experiment and a registered model through ``create_on``, then uses them at once through
    ``use_on``. Returns the refused steps (step -> count) and the number of rounds run."""
    refused: dict[str, int] = {}

    def step(name, url, method, path, body=None):
        response = fresh_call(url, key, method, path, body)
        if response.status_code == 403:
            refused[name] = refused.get(name, 0) + 1
            return None
        assert response.status_code == 200, (name, response.status_code, response.text)
        return response.json()

    tag = uuid.uuid4().hex[:8]
    for i in range(rounds):
        for _ in range(3):  # every worker of `use_on` now holds this user's grants
            step("warm", use_on, "GET", f"{API2}/experiments/search", {"max_results": 1})
        name = f"fresh-{tag}-{i}"
        experiment = step(
            "experiments/create", create_on, "POST", f"{API2}/experiments/create", {"name": name}
        )
        experiment_id = experiment["experiment_id"]
        step(
            "experiments/get",
            use_on,
            "GET",
            f"{API2}/experiments/get",
            {"experiment_id": experiment_id},
        )
        run = step(
            "runs/create", use_on, "POST", f"{API2}/runs/create", {"experiment_id": experiment_id}
        )
        if run is None:  # refused: once every cache has expired it must work, to go on
            time.sleep(1.2)
            run = step(
                "runs/create (after 1.2 s)",
                use_on,
                "POST",
                f"{API2}/runs/create",
                {"experiment_id": experiment_id},
            )
        run_id = run["run"]["info"]["run_id"]
        step(
            "runs/log-metric",
            use_on,
            "POST",
            f"{API2}/runs/log-metric",
            {"run_id": run_id, "key": "m", "value": 1.0, "timestamp": 0},
        )
        step(
            "runs/search",
            use_on,
            "POST",
            f"{API2}/runs/search",
            {"experiment_ids": [experiment_id]},
        )
        listed = step(
            "experiments/search",
            use_on,
            "POST",
            f"{API2}/experiments/search",
            {"filter": f"name = '{name}'", "max_results": 10},
        )
        if listed is not None and not listed.get("experiments"):
            refused["experiments/search (left out)"] = (
                refused.get("experiments/search (left out)", 0) + 1
            )
        step(
            "registered-models/create",
            create_on,
            "POST",
            f"{API2}/registered-models/create",
            {"name": name},
        )
        step(
            "registered-models/update",
            use_on,
            "PATCH",
            f"{API2}/registered-models/update",
            {"name": name, "description": "fresh"},
        )
        version = step(
            "model-versions/create",
            use_on,
            "POST",
            f"{API2}/model-versions/create",
            {"name": name, "source": f"runs:/{run_id}/model", "run_id": run_id},
        )
        if version is not None:
            step(
                "model-versions/update",
                use_on,
                "PATCH",
                f"{API2}/model-versions/update",
                {"name": name, "version": version["model_version"]["version"], "description": "v"},
            )
    return refused


@pytest.fixture(scope="module")
def private_server(tmp_path_factory):
    """Two workers; users reach only what they created or were granted (NO_PERMISSIONS), so
    every step of the flow, reads and listings included, depends on the creator's grant."""
    workdir = tmp_path_factory.mktemp("fresh-refusals")
    config = workdir / "hokusai.ini"
    config.write_text("[mlflow]\ndefault_permission = NO_PERMISSIONS\n")
    srv = Server(str(workdir), workers=2, env={"HOKUSAI_CONFIG": str(config)})
    srv.start()
    yield srv
    srv.stop()


def test_a_new_experiment_and_model_work_on_every_worker_at_once(private_server):
    server = private_server
    key = server.create_key(f"fresh-{uuid.uuid4().hex[:6]}")
    assert create_then_use(server.url, server.url, key) == {}
