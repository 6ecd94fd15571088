"""Keys limited to named experiments and registered models, on a real server with the stock
MLflow client: the seed's complete workflow with a limited key, refusals outside the limits
(403 naming the key, audited), filtered searches with correct pagination, can-create, changes
to the limits, and every surface that shows them (CLI, REST, app client)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time

import mlflow
import pytest
import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

KEYS = "/api/2.0/mlflow/hokusai/api-keys"
WHOAMI = "/api/2.0/mlflow/hokusai/whoami"
PREFIX = "/api/mlflow"


@contextlib.contextmanager
def as_key(server, key, root=""):
    """The stock client configured as the guide says: tracking URI and token."""
    saved = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_TOKEN",)}
    os.environ["MLFLOW_TRACKING_TOKEN"] = key
    mlflow.set_tracking_uri(server.url + root)
    try:
        yield MlflowClient(server.url + root)
    finally:
        mlflow.set_tracking_uri(None)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _key(server, owner: str, **body) -> str:
    """A key for ``owner`` made by the admin over REST (the CLI's path has its own tests)."""
    made = server.post(f"{KEYS}/create", server.admin_key, json={"username": owner, **body})
    assert made.status_code == 200, made.text
    return made.json()["key"]


def _key_id(server, key) -> str:
    return server.get(WHOAMI, key).json()["key_id"]


def _denied(call) -> str:
    with pytest.raises(MlflowException) as caught:
        call()
    assert caught.value.error_code == "PERMISSION_DENIED", caught.value.message
    return caught.value.message


@pytest.fixture(scope="module")
def world(server):
    """An owner with two experiments and two registered models, made with their own key."""
    suffix = time.time_ns()
    owner = f"limits-owner-{suffix}"
    owner_key = _key(server, owner)
    names = {
        "exp": f"seed-ci-{suffix}",
        "other_exp": f"other-exp-{suffix}",
        "model": f"rf-classifier-{suffix}",
        "other_model": f"other-model-{suffix}",
    }
    with as_key(server, owner_key) as client:
        exp = client.create_experiment(names["exp"])
        other_exp = client.create_experiment(names["other_exp"])
        client.create_registered_model(names["model"])
        client.create_registered_model(names["other_model"])
        other_run = client.create_run(other_exp).info.run_id
    return {
        "owner": owner,
        "owner_key": owner_key,
        "exp_id": exp,
        "other_exp_id": other_exp,
        "other_run": other_run,
        **names,
    }


@pytest.fixture(scope="module")
def limited(server, world):
    return server.create_key(
        world["owner"], "--experiment", world["exp"], "--model", world["model"], "--name", "ci"
    )


def test_the_seeds_complete_workflow_with_a_limited_key(server, world, limited):
    """The guide's complete workflow, verbatim but for the names, at the guide's URL (under
    the prefix; the route walk covers both roots): experiment, run, params, metrics,
    log_model with registration, tag, load."""
    root = PREFIX
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import accuracy_score, precision_score, recall_score
    from sklearn.model_selection import train_test_split

    X, y = make_classification(n_samples=300, n_features=20, n_classes=2, random_state=1)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=1)
    with as_key(server, limited, root) as client:
        mlflow.set_experiment(world["exp"])
        with mlflow.start_run() as run:
            mlflow.log_param("n_estimators", 20)
            mlflow.log_param("max_depth", 5)
            mlflow.log_param("dataset_size", len(X))
            model = RandomForestClassifier(n_estimators=20, max_depth=5, random_state=42)
            model.fit(X_train, y_train)
            predictions = model.predict(X_test)
            mlflow.log_metric("accuracy", accuracy_score(y_test, predictions))
            mlflow.log_metric("precision", precision_score(y_test, predictions))
            mlflow.log_metric("recall", recall_score(y_test, predictions))
            mlflow.sklearn.log_model(
                model,
                "model",
                registered_model_name=world["model"],
                skops_trusted_types=["sklearn.tree._tree.Tree"],
            )
        version = client.get_latest_versions(world["model"])[0]
        assert version.run_id == run.info.run_id
        client.set_model_version_tag(world["model"], version.version, "algorithm", "rf")
        client.set_registered_model_tag(world["model"], "task", "classification")
        loaded = mlflow.pyfunc.load_model(f"models:/{world['model']}/{version.version}")
        assert (loaded.predict(X_test) == predictions).all()
        assert client.get_run(run.info.run_id).data.metrics["accuracy"] > 0.5
        # The guide's listing of the run's artifacts shows the model.
        listing = requests.get(
            f"{server.url}{root}/ajax-api/2.0/mlflow-artifacts/artifacts",
            params={"run_id": run.info.run_id},
            headers={"Authorization": f"Bearer {limited}"},
            timeout=30,
        )
        assert listing.status_code == 200, listing.text
        assert "model" in {f["path"] for f in listing.json()["files"]}


def test_outside_its_limits_the_key_gets_403_naming_it_and_sees_nothing(server, world, limited):
    prefix = server.get(WHOAMI, limited).json()
    assert prefix["limits"]["experiments"] == [{"name": world["exp"], "permission": "MANAGE"}]
    display = next(
        k["prefix"]
        for k in server.get(f"{KEYS}/list", world["owner_key"]).json()["api_keys"]
        if k["name"] == "ci"
    )
    with as_key(server, limited) as client:
        for call in (
            lambda: client.get_experiment(world["other_exp_id"]),
            lambda: client.get_experiment_by_name(world["other_exp"]),
            lambda: client.create_run(world["other_exp_id"]),
            lambda: client.get_run(world["other_run"]),
            lambda: client.log_metric(world["other_run"], "m", 1.0),
            lambda: client.set_experiment_tag(world["other_exp_id"], "k", "v"),
            lambda: client.get_registered_model(world["other_model"]),
            lambda: client.set_registered_model_tag(world["other_model"], "k", "v"),
            lambda: client.delete_registered_model(world["other_model"]),
        ):
            message = _denied(call)
            assert f"({display}…)" in message and "limited" in message
            assert world["other_exp"] not in message and world["other_model"] not in message
        experiments = {e.name for e in client.search_experiments()}
        models = {m.name for m in client.search_registered_models()}
        versions = {v.name for v in client.search_model_versions()}
        runs = client.search_runs([world["other_exp_id"]])
    assert world["exp"] in experiments and world["other_exp"] not in experiments
    assert experiments <= {world["exp"]}
    assert models <= {world["model"]} and world["other_model"] not in models
    assert versions <= {world["model"]}
    assert runs == []
    # Nothing was written outside: the owner still sees the other experiment untouched.
    with as_key(server, world["owner_key"]) as client:
        assert client.get_experiment(world["other_exp_id"]).tags == {}
        assert client.get_run(world["other_run"]).data.metrics == {}
        assert client.get_registered_model(world["other_model"]).tags == {}
    # Refusals are audited like other refusals.
    time.sleep(0.5)
    events = server.get(
        "/api/2.0/mlflow/hokusai/audit/list", world["owner_key"], params={"event": "denied-use"}
    ).json()["events"]
    assert any("resource-limited key" in e.get("detail", "") for e in events), events


def test_searches_page_correctly_through_what_the_key_may_read(server, world):
    """Fifteen experiments, every third one named by the key: pages of two hold only those,
    none is lost or repeated, and the last page ends the listing."""
    suffix = time.time_ns()
    with as_key(server, world["owner_key"]) as client:
        made = [client.create_experiment(f"page-{suffix}-{i:02d}") for i in range(15)]
    named = made[::3]
    key = _key(server, world["owner"], experiments=named)
    seen, token = [], None
    with as_key(server, key) as client:
        while True:
            page = client.search_experiments(max_results=2, page_token=token)
            assert len(page) <= 2
            seen += [e.experiment_id for e in page]
            token = page.token
            if not token:
                break
    assert sorted(seen) == sorted(named) and len(seen) == len(set(seen))


def test_a_ceiling_below_the_owners_permission_and_read_keys(server, world):
    read_only = _key(server, world["owner"], experiments=[f"{world['exp']}=READ"])
    with as_key(server, read_only) as client:
        assert client.get_experiment(world["exp_id"]).name == world["exp"]
        message = _denied(lambda: client.set_experiment_tag(world["exp_id"], "k", "v"))
        assert "limited" in message
        _denied(lambda: client.create_run(world["exp_id"]))
    scoped = server.create_key(world["owner"], "--scope", "read", "--experiment", world["exp_id"])
    record = next(
        k
        for k in server.get(f"{KEYS}/list", world["owner_key"]).json()["api_keys"]
        if k["id"] == _key_id(server, scoped)
    )
    assert record["limits"]["experiments"] == [{"id": world["exp_id"], "permission": "READ"}]


def test_a_key_never_exceeds_its_owner(server):
    """A user granted EDIT on an admin's experiment gets a key with a MANAGE ceiling there: it
    may edit, never delete; once the grant is revoked (the server's default is READ) the key
    can only read, whatever its limit says."""
    suffix = time.time_ns()
    user = f"limits-shared-{suffix}"
    _key(server, user)
    with as_key(server, server.admin_key) as client:
        exp = client.create_experiment(f"shared-{suffix}")
    grant = {"username": user, "resource_type": "experiment", "resource_id": exp}
    answer = server.post(
        "/api/3.0/mlflow/users/permissions/grant",
        server.admin_key,
        json={**grant, "permission": "EDIT"},
    )
    assert answer.status_code == 200, answer.text
    key = _key(server, user, experiments=[{"id": exp, "permission": "MANAGE"}])
    time.sleep(1.1)  # the staleness bound of the authorization caches
    with as_key(server, key) as client:
        client.set_experiment_tag(exp, "before", "yes")
        _denied(lambda: client.delete_experiment(exp))  # MANAGE on paper, EDIT in fact
    answer = server.post("/api/3.0/mlflow/users/permissions/revoke", server.admin_key, json=grant)
    assert answer.status_code == 200, answer.text
    time.sleep(1.1)
    with as_key(server, key) as client:
        assert client.get_experiment(exp).tags["before"] == "yes"
        _denied(lambda: client.set_experiment_tag(exp, "after", "yes"))


def test_can_create_adds_what_the_key_creates(server, world):
    suffix = time.time_ns()
    key = _key(server, world["owner"], can_create=True, registered_models=[f"ci-{suffix}-*"])
    plain = _key(server, world["owner"], registered_models=[f"ci-{suffix}-*"])
    with as_key(server, plain) as client:
        message = _denied(lambda: client.create_experiment(f"nope-{suffix}"))
        assert "--can-create" in message
    with as_key(server, key) as client:
        exp = client.create_experiment(f"created-{suffix}")
        # The next request may land on the other worker: it works there too, at once.
        for _ in range(4):
            run = client.create_run(exp)
            client.log_metric(run.info.run_id, "m", 1.0)
        client.create_registered_model(f"made-{suffix}")
        client.set_registered_model_tag(f"made-{suffix}", "k", "v")
        _denied(lambda: client.get_experiment(world["other_exp_id"]))
        assert {e.name for e in client.search_experiments()} == {f"created-{suffix}"}
    listed = {k["id"]: k for k in server.get(f"{KEYS}/list", world["owner_key"]).json()["api_keys"]}
    limits = listed[_key_id(server, key)]["limits"]
    assert {"id": exp, "permission": "MANAGE"} in limits["experiments"]
    assert {"name": f"made-{suffix}", "permission": "MANAGE"} in limits["registered_models"]
    assert limits["can_create"] is True


def test_limits_change_over_rest_and_are_kept_on_rotation(server, world):
    key = _key(server, world["owner"], experiments=[world["exp"]])
    key_id = _key_id(server, key)
    with as_key(server, key) as client:
        _denied(lambda: client.get_experiment(world["other_exp_id"]))
    # Widening (by the owner, with an unlimited key): the other experiment, read only.
    answer = server.post(
        f"{KEYS}/update",
        world["owner_key"],
        json={"key_id": key_id, "experiments": [world["exp"], f"{world['other_exp_id']}=READ"]},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["api_key"]["limits"]["experiments"][1] == {
        "id": world["other_exp_id"],
        "permission": "READ",
    }
    time.sleep(1.1)
    with as_key(server, key) as client:
        assert client.get_experiment(world["other_exp_id"]).name == world["other_exp"]
        _denied(lambda: client.set_experiment_tag(world["other_exp_id"], "k", "v"))
    # The limited key cannot widen itself, nor mint or rotate keys.
    for path, body in (
        ("update", {"key_id": key_id, "unlimited": True}),
        ("create", {"name": "escape"}),
        ("rotate", {"key_id": key_id}),
    ):
        refused = server.post(f"{KEYS}/{path}", key, json=body)
        assert refused.status_code == 403, refused.text
        assert "limited" in refused.json()["message"]
    # Rotation keeps the limits.
    rotated = server.post(f"{KEYS}/rotate", world["owner_key"], json={"key_id": key_id}).json()
    assert rotated["api_key"]["limits"] == answer.json()["api_key"]["limits"]
    with as_key(server, rotated["key"]) as client:
        _denied(lambda: client.get_registered_model(world["other_model"]))
    # Narrowing to nothing, then removing the limits.
    new_id = rotated["api_key"]["id"]
    server.cli("keys", "update", new_id, "--no-experiments")
    time.sleep(1.1)
    with as_key(server, rotated["key"]) as client:
        _denied(lambda: client.get_experiment(world["exp_id"]))
    # Online, with the owner's key, as the CLI's --tracking-uri mode does it.
    online = subprocess.run(
        [sys.executable, "-m", "mlflow_hokusai.cli", "keys", "update", new_id, "--unlimited"]
        + ["--tracking-uri", server.url],
        env={**server.env(), "HOKUSAI_API_KEY": world["owner_key"]},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert online.returncode == 0, online.stderr
    assert "no resource limits" in online.stderr and "none" not in online.stderr
    time.sleep(1.1)
    with as_key(server, rotated["key"]) as client:
        assert client.get_registered_model(world["other_model"]).name == world["other_model"]


def test_bad_limits_are_400_naming_the_field(server, world):
    for body, words in (
        ({"experiments": "12"}, "'experiments' must be a list"),
        ({"experiments": [{"id": "x"}]}, "must be a number"),
        ({"experiments": [{"name": "a", "permission": "OWNER"}]}, "READ, EDIT, MANAGE"),
        ({"registered_models": ["a*b"]}, "'*' may only end a prefix"),
        ({"registered_models": ["*"]}, "non-empty prefix"),
        ({"can_create": "yes"}, "'can_create' must be true or false"),
        ({"experiments": ["x"] * 101}, "at most 100"),
    ):
        answer = server.post(f"{KEYS}/create", world["owner_key"], json=body)
        assert answer.status_code == 400, (body, answer.text)
        assert answer.json()["error_code"] == "INVALID_PARAMETER_VALUE"
        assert words in answer.json()["message"], answer.json()["message"]
    admin_limited = server.post(
        f"{KEYS}/create", server.admin_key, json={"experiments": [world["exp_id"]]}
    )
    assert admin_limited.status_code == 400 and "admin" in admin_limited.json()["message"]
    cli = server.cli("keys", "create", "--user", world["owner"], "--model", "a*b", check=False)
    assert cli.returncode != 0 and "'*' may only end a prefix" in cli.stderr


def test_limits_show_in_keys_list_the_app_client_and_whoami(server, world, limited):
    table = server.cli("keys", "list", "--user", world["owner"]).stdout
    assert f"experiments={world['exp']}:MANAGE models={world['model']}:MANAGE" in table
    listed = json.loads(
        server.cli("keys", "list", "--user", world["owner"], "--format", "json").stdout
    )
    ci = next(k for k in listed if k["name"] == "ci")
    assert ci["limits"]["registered_models"] == [{"name": world["model"], "permission": "MANAGE"}]
    os.environ["MLFLOW_TRACKING_TOKEN"] = world["owner_key"]
    try:
        from mlflow.server import get_app_client

        client = get_app_client("hokusai", tracking_uri=server.url)
        made = client.create_api_key(
            name="from-app-client",
            experiments=[{"name": world["exp"], "permission": "EDIT"}],
            registered_models=["rf-*"],
            can_create=True,
        )
        assert made.limits["experiments"] == [{"name": world["exp"], "permission": "EDIT"}]
        assert made.limits["can_create"] is True
        changed = client.update_api_key_limits(made.id, registered_models=[])
        assert changed.limits["registered_models"] == []
        assert changed.limits["experiments"] == made.limits["experiments"]
        assert client.update_api_key_limits(made.id, unlimited=True).limits is None
    finally:
        os.environ.pop("MLFLOW_TRACKING_TOKEN", None)
    assert server.get(WHOAMI, world["owner_key"]).json()["limits"] is None


def test_a_key_limited_to_a_workspace_is_refused_elsewhere(tmp_path_factory):
    """On a server with MLflow workspaces on: the key acts in its workspace (MLflow decides
    there) and is refused in any other, and in the default one, naming the workspace."""
    from tests.server import Server

    workdir = str(tmp_path_factory.mktemp("workspaces"))
    with Server(workdir, workers=1, args=["--enable-workspaces"]) as srv:

        def call(key, workspace, path="/api/2.0/mlflow/experiments/search", body=None):
            headers = {"Authorization": f"Bearer {key}"}
            if workspace:
                headers["X-MLflow-Workspace"] = workspace
            return requests.post(srv.url + path, headers=headers, json=body or {}, timeout=30)

        for name in ("team-a", "team-b"):
            made = call(srv.admin_key, None, "/api/3.0/mlflow/workspaces", {"name": name})
            assert made.status_code == 201, made.text
        key = srv.create_key("ws-user", "--workspace", "team-a")
        assert srv.get(WHOAMI, key).json()["limits"]["workspace"] == "team-a"
        inside = call(key, "team-a", body={"max_results": 10})
        assert inside.status_code == 200, inside.text
        for workspace, shown in (("team-b", "'team-b'"), (None, "the default workspace")):
            refused = call(key, workspace, body={"max_results": 10})
            assert refused.status_code == 403, refused.text
            message = refused.json()["message"]
            assert "limited to workspace 'team-a'" in message and shown in message
