"""Token tags against a real server, written with the stock MLflow client (and raw REST for the
ajax-api twins): every rule on every tag-writing route, nothing written on a refusal, the
uniqueness of token ids across models, and the hook's place after authorization."""

import threading
import uuid

import pytest
import sqlalchemy as sa
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlflow_hokusai.store.engine import get_engine

SOURCE = "s3://hokusai-models/model"
ROUTES = ["rm-create", "rm-set-tag", "mv-create", "mv-set-tag"]
_PATHS = {
    "rm-create": "/mlflow/registered-models/create",
    "rm-set-tag": "/mlflow/registered-models/set-tag",
    "mv-create": "/mlflow/model-versions/create",
    "mv-set-tag": "/mlflow/model-versions/set-tag",
}


def unique(prefix="m"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# (key, value, accepted): an accepted and a refused value for each rule, on every route.
CASES = [
    ("hokusai_token_id", None, True),  # None: a fresh unique valid id
    ("hokusai_token_id", "-bad", False),
    ("benchmark_metric", "F1", True),
    ("benchmark_metric", "banana", False),
    ("benchmark_value", "0.0000001", True),
    ("benchmark_value", "banana", False),
]
# The edge cases, on the route the SDK and most clients use (model-versions/set-tag).
EDGE_CASES = [
    ("hokusai_token_id", "a_b", False),
    ("hokusai_token_id", "x" * 65, False),
    ("hokusai_token_id", "x" * 64, True),
    ("benchmark_metric", " f1", False),
    ("benchmark_value", "-0", True),
    ("benchmark_value", "1e-07", True),
    ("benchmark_value", "nan", False),
    ("benchmark_value", "inf", False),
    ("benchmark_value", "1e309", False),
    ("benchmark_value", "1,5", False),
    ("benchmark_value", " 0.5", False),
    ("benchmark_value", "", False),
    ("benchmark_value", "True", False),
]


class Writer:
    """Writes one tag through one route, on an entity it prepares; ``stored`` reads it back."""

    def __init__(self, client: MlflowClient, route: str):
        self.client = client
        self.route = route
        self.name = unique()
        self.version = None
        if route in ("rm-set-tag", "mv-create", "mv-set-tag"):
            client.create_registered_model(self.name)
        if route == "mv-set-tag":
            self.version = client.create_model_version(self.name, SOURCE).version

    def write(self, key, value):
        c, name = self.client, self.name
        if self.route == "rm-create":
            c.create_registered_model(name, tags={key: value})
        elif self.route == "rm-set-tag":
            c.set_registered_model_tag(name, key, value)
        elif self.route == "mv-create":
            self.version = c.create_model_version(name, SOURCE, tags={key: value}).version
        else:
            c.set_model_version_tag(name, self.version, key, value)

    def stored(self, key):
        """The stored value of ``key`` (None if absent); raises if the entity is missing."""
        if self.route.startswith("rm"):
            return self.client.get_registered_model(self.name).tags.get(key)
        versions = self.client.search_model_versions(f"name = '{self.name}'")
        if not versions:
            return None
        return versions[0].tags.get(key)

    def nothing_written(self, key):
        if self.route == "rm-create":
            with pytest.raises(MlflowException) as info:
                self.client.get_registered_model(self.name)
            return info.value.error_code == "RESOURCE_DOES_NOT_EXIST"
        return self.stored(key) is None


def raw_write(server, key_, root, route, name, tag_key, value, version=None):
    body = {"name": name}
    if route.endswith("create"):
        body["tags"] = [{"key": tag_key, "value": value}]
    else:
        body.update(key=tag_key, value=value)
    if route == "mv-create":
        body["source"] = SOURCE
    if route == "mv-set-tag":
        body["version"] = version
    return server.post(root + _PATHS[route], key_, json=body)


@pytest.fixture
def client(server, tracking):
    with tracking(server, server.admin_key):
        yield MlflowClient()


@pytest.fixture
def prefixed_client(server, tracking):
    with tracking(server, server.admin_key, prefix="/api/mlflow"):
        yield MlflowClient()


def _check_case(client, route, key, value, accepted):
    value = unique("tok") if value is None else value
    writer = Writer(client, route)
    if accepted:
        writer.write(key, value)
        assert writer.stored(key) == value  # stored exactly as sent
        return
    with pytest.raises(MlflowException) as info:
        writer.write(key, value)
    assert info.value.error_code == "INVALID_PARAMETER_VALUE"
    assert f"{key}={value!r}"[: len(key) + 42] in info.value.message  # tag and (truncated) value
    assert writer.nothing_written(key)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("key, value, accepted", CASES)
def test_rules_on_every_route_with_the_stock_client(client, route, key, value, accepted):
    _check_case(client, route, key, value, accepted)


def test_edge_cases_on_model_version_set_tag(client):
    for key, value, accepted in EDGE_CASES:
        if key == "hokusai_token_id" and accepted:
            value = unique("t") + "x" * (64 - 12)
        _check_case(client, "mv-set-tag", key, value, accepted)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    "key, value, accepted",
    [
        ("hokusai_token_id", "-bad", False),
        ("benchmark_value", "0.5", True),
        ("benchmark_metric", "banana", False),
    ],
)
def test_rules_under_the_url_prefix(prefixed_client, route, key, value, accepted):
    _check_case(prefixed_client, route, key, value, accepted)


@pytest.mark.parametrize("route", ROUTES)
def test_ajax_api_twins(server, client, route):
    admin = server.admin_key
    writer = Writer(client, route)
    for key, value in [
        ("hokusai_token_id", "bad-"),
        ("benchmark_value", "inf"),
        ("benchmark_metric", "accuracy "),
        ("benchmark_value", 0.5),
    ]:
        response = raw_write(
            server, admin, "/ajax-api/2.0", route, writer.name, key, value, writer.version
        )
        assert response.status_code == 400, response.text
        body = response.json()
        assert body["error_code"] == "INVALID_PARAMETER_VALUE" and key in body["message"]
        assert writer.nothing_written(key)
    good = unique("tok")
    response = raw_write(
        server, admin, "/ajax-api/2.0", route, writer.name, "hokusai_token_id", good, writer.version
    )
    assert response.status_code == 200, response.text
    assert writer.stored("hokusai_token_id") == good


def test_other_tags_are_not_checked(client):
    name = unique()
    client.create_registered_model(name, tags={"owner": "-", "hokusai_token_id_note": "-"})
    version = client.create_model_version(name, SOURCE, tags={"Benchmark_Value": "x"}).version
    client.set_model_version_tag(name, version, "notes", "banana")
    tags = client.get_model_version(name, version).tags
    assert tags == {"Benchmark_Value": "x", "notes": "banana"}


# --- benchmark_metric / benchmark_value: whichever is written second ----------------------


def test_value_written_after_metric(client):
    name = unique()
    client.create_registered_model(name)
    tags = {"benchmark_metric": "accuracy"}
    version = client.create_model_version(name, SOURCE, tags=tags).version
    with pytest.raises(MlflowException) as info:
        client.set_model_version_tag(name, version, "benchmark_value", "1.5")
    assert info.value.error_code == "INVALID_PARAMETER_VALUE"
    assert "between 0 and 1" in info.value.message
    assert "benchmark_value" not in client.get_model_version(name, version).tags
    client.set_model_version_tag(name, version, "benchmark_value", "0.91")


def test_metric_written_after_value(client):
    name = unique()
    client.create_registered_model(name)
    version = client.create_model_version(name, SOURCE, tags={"benchmark_value": "12.5"}).version
    with pytest.raises(MlflowException) as info:
        client.set_model_version_tag(name, version, "benchmark_metric", "precision")
    assert info.value.error_code == "INVALID_PARAMETER_VALUE"
    assert "benchmark_metric" in info.value.message and "12.5" in info.value.message
    assert "benchmark_metric" not in client.get_model_version(name, version).tags
    client.set_model_version_tag(name, version, "benchmark_metric", "RMSE")
    assert client.get_model_version(name, version).tags["benchmark_metric"] == "RMSE"


def test_both_in_one_create_and_on_registered_models(client):
    name = unique()
    out_of_range = {"benchmark_metric": "r2", "benchmark_value": "2"}
    with pytest.raises(MlflowException):
        client.create_registered_model(name, tags=out_of_range)
    client.create_registered_model(name, tags={"benchmark_metric": "r2", "benchmark_value": "-3"})
    with pytest.raises(MlflowException):
        client.set_registered_model_tag(name, "benchmark_metric", "recall")  # -3 not in [0, 1]


def test_stock_register_model_and_tag_deletion(client, tracking, server):
    with tracking(server, server.admin_key) as mlflow:
        name = unique()
        with pytest.raises(MlflowException) as info:
            mlflow.register_model(SOURCE, name, tags={"benchmark_value": "banana"})
        assert info.value.error_code == "INVALID_PARAMETER_VALUE"
        assert not client.search_model_versions(f"name = '{name}'")
        version = mlflow.register_model(
            SOURCE, name, tags={"benchmark_metric": "auc", "benchmark_value": "0.8"}
        ).version
    client.delete_model_version_tag(name, version, "benchmark_metric")
    client.delete_model_version_tag(name, version, "benchmark_value")
    client.set_registered_model_tag(name, "hokusai_token_id", unique("tok"))
    client.delete_registered_model_tag(name, "hokusai_token_id")
    assert client.get_model_version(name, version).tags == {}
    assert client.get_registered_model(name).tags == {}


def test_prompts_still_work(tracking, server):
    with tracking(server, server.admin_key) as mlflow:
        name = unique("prompt")
        prompt = mlflow.genai.register_prompt(name, "Hello {{name}}", tags={"team": "x"})
        mlflow.genai.register_prompt(name, "Hi {{name}}", tags={"team": "y"})
        assert mlflow.genai.load_prompt(f"prompts:/{name}/2").template == "Hi {{name}}"
        assert prompt.version == 1


# --- uniqueness ----------------------------------------------------------------------------


def _conflict(info, holder):
    assert info.value.error_code == "RESOURCE_ALREADY_EXISTS"
    assert repr(holder) in info.value.message


def test_a_token_id_belongs_to_one_registered_model(server, client):
    token = unique("Tok")
    model_a, model_b = unique("a"), unique("b")
    client.create_registered_model(model_a)
    client.create_model_version(model_a, SOURCE, tags={"hokusai_token_id": token})
    client.create_registered_model(model_b)

    with pytest.raises(MlflowException) as info:
        client.create_model_version(model_b, SOURCE, tags={"hokusai_token_id": token.upper()})
    _conflict(info, model_a)
    assert not client.search_model_versions(f"name = '{model_b}'")

    b_version = client.create_model_version(model_b, SOURCE).version
    with pytest.raises(MlflowException) as info:
        client.set_model_version_tag(model_b, b_version, "hokusai_token_id", token.lower())
    _conflict(info, model_a)
    with pytest.raises(MlflowException) as info:
        client.set_registered_model_tag(model_b, "hokusai_token_id", token)
    _conflict(info, model_a)
    with pytest.raises(MlflowException) as info:
        client.create_registered_model(unique("c"), tags={"hokusai_token_id": token})
    _conflict(info, model_a)
    response = raw_write(
        server,
        server.admin_key,
        "/api/mlflow/ajax-api/2.0",
        "mv-set-tag",
        model_b,
        "hokusai_token_id",
        token,
        b_version,
    )
    assert response.status_code == 409, response.text
    assert response.json()["error_code"] == "RESOURCE_ALREADY_EXISTS"
    assert repr(model_a) in response.json()["message"]
    assert client.get_model_version(model_b, b_version).tags == {}

    # Re-tagging versions of the same model (and the model itself) is fine.
    a2 = client.create_model_version(model_a, SOURCE, tags={"hokusai_token_id": token}).version
    client.set_model_version_tag(model_a, a2, "hokusai_token_id", token.upper())
    client.set_registered_model_tag(model_a, "hokusai_token_id", token)

    # Once model A no longer carries it (tags deleted: always allowed), B may take it.
    client.delete_model_version_tag(model_a, "1", "hokusai_token_id")
    client.delete_model_version_tag(model_a, a2, "hokusai_token_id")
    client.delete_registered_model_tag(model_a, "hokusai_token_id")
    client.set_model_version_tag(model_b, b_version, "hokusai_token_id", token)


def test_concurrent_claims_never_give_one_token_to_two_models(server, client):
    """Two requests race to put the same new token id on two models: at most one wins."""
    rounds = 6
    models = [unique("race"), unique("race")]
    for model in models:
        client.create_registered_model(model)
    versions = {m: client.create_model_version(m, SOURCE).version for m in models}
    for _ in range(rounds):
        token = unique("race")
        barrier = threading.Barrier(2)
        results = {}

        def tag(model, token=token, barrier=barrier, results=results):
            barrier.wait()
            results[model] = raw_write(
                server,
                server.admin_key,
                "/api/2.0",
                "mv-set-tag",
                model,
                "hokusai_token_id",
                token,
                versions[model],
            ).status_code

        threads = [threading.Thread(target=tag, args=(m,)) for m in models]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sorted(results.values()) in ([200, 409], [409, 409]), results
        holders = {
            v.name for v in client.search_model_versions(f"tags.hokusai_token_id = '{token}'")
        }
        assert len(holders) == sum(code == 200 for code in results.values())
    # Every claim was released when its request ended.
    with get_engine(server.database_uri).connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM hokusai_token_claims")).scalar() == 0


# --- place of the hook: after authentication and authorization ---------------------------


def test_unauthenticated_gets_401_not_a_tag_message(server):
    response = raw_write(
        server, None, "/api/2.0", "rm-set-tag", "anything", "benchmark_value", "banana"
    )
    assert response.status_code == 401 and response.json()["error_code"] == "UNAUTHENTICATED"


def test_unauthorized_gets_403_not_a_tag_message(server, client):
    name = unique()
    client.create_registered_model(name)
    version = client.create_model_version(name, SOURCE).version
    other = server.create_key(unique("user"))  # default permission READ: may not edit
    reader = server.create_key(unique("user"), "--admin", "--scope", "read")
    for key_ in (other, reader):
        for route in ("rm-set-tag", "mv-set-tag"):
            response = raw_write(
                server, key_, "/api/2.0", route, name, "benchmark_value", "banana", version
            )
            assert response.status_code == 403, response.text
            assert response.json()["error_code"] == "PERMISSION_DENIED"
