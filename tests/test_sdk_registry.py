"""``ModelRegistry.register_tokenized_model`` against a real server, with a non-admin key."""

import os
import time

import mlflow
import pytest
import sklearn
from mlflow.exceptions import MlflowException
from packaging.version import Version
from sklearn.linear_model import LogisticRegression

from mlflow_hokusai import ModelRegistry, TokenizedModel
from mlflow_hokusai.tags.rules import TagRuleError
from tests.helpers import api_key_for


@pytest.fixture(scope="module")
def sdk(server):
    """A key in the environment (as users set it) and two runs, each with a logged model."""
    key = api_key_for(server, "sdk-user")
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith(("MLFLOW_", "HOKUSAI_")):
                mp.delenv(name)
        mp.setenv("MLFLOW_TRACKING_TOKEN", key)
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        mlflow.set_tracking_uri(server.url)
        mlflow.set_experiment(f"sdk-tests-{time.time_ns()}")
        runs = []
        for c in (0.5, 1.0):
            with mlflow.start_run() as run:
                model = LogisticRegression(C=c).fit([[0.0], [1.0], [0.2], [0.9]], [0, 1, 0, 1])
                mlflow.sklearn.log_model(
                    model, name="model", pip_requirements=[f"scikit-learn=={sklearn.__version__}"]
                )
            runs.append(run.info.run_id)
        mlflow.set_tracking_uri(None)
        yield {"key": key, "runs": runs, "registry": ModelRegistry(server.url)}


def unique(prefix: str) -> str:
    return f"{prefix}-{time.time_ns()}"


def versions_of(server, name: str) -> list[dict]:
    """What the server holds, read over REST with the admin key."""
    response = server.get(
        "/api/2.0/mlflow/model-versions/search",
        server.admin_key,
        params={"filter": f"name = '{name}'"},
    )
    assert response.status_code == 200, response.text
    return response.json().get("model_versions", [])


def model_exists(server, name: str) -> bool:
    response = server.get(
        "/api/2.0/mlflow/registered-models/get", server.admin_key, params={"name": name}
    )
    assert response.status_code in (200, 404), response.text
    return response.status_code == 200


def tags_of(version: dict) -> dict:
    return {t["key"]: t["value"] for t in version.get("tags", [])}


def test_happy_path(server, sdk):
    name, token = unique("sdk-model"), unique("sdk-token")
    run_id = sdk["runs"][0]
    result = sdk["registry"].register_tokenized_model(
        f"runs:/{run_id}/model", name, token, "AUROC", 0.91, tags={"team": "ml"}
    )
    assert isinstance(result, TokenizedModel)
    assert (result.name, result.version, result.token_id, result.metric, result.baseline) == (
        name,
        "1",
        token,
        "auroc",
        0.91,
    )
    assert result.run_id == run_id and result.source.startswith("models:/m-")
    with pytest.raises(AttributeError):
        result.version = "2"  # frozen

    [version] = versions_of(server, name)
    assert version["status"] == "READY" and version["run_id"] == run_id
    assert tags_of(version) == {
        "hokusai_token_id": token,
        "benchmark_metric": "auroc",
        "benchmark_value": "0.91",
        "team": "ml",
    }
    mlflow.set_tracking_uri(server.url)
    try:
        loaded = mlflow.pyfunc.load_model(f"models:/{name}/{result.version}")
        assert list(loaded.predict([[0.0], [1.0]])) == [0, 1]
    finally:
        mlflow.set_tracking_uri(None)


def test_second_call_returns_the_same_version(server, sdk):
    name, token = unique("sdk-idem"), unique("sdk-token")
    uri = f"runs:/{sdk['runs'][0]}/model"
    first = sdk["registry"].register_tokenized_model(uri, name, token, "accuracy", 0.8)
    again = sdk["registry"].register_tokenized_model(uri, name, token, "accuracy", "0.8")
    assert again == first
    assert len(versions_of(server, name)) == 1

    # Another run's model for the same token is a new version of the same model.
    other = sdk["registry"].register_tokenized_model(
        f"runs:/{sdk['runs'][1]}/model", name, token, "accuracy", 0.85
    )
    assert other.version == "2"
    # The same source and token with a different baseline is refused, not re-tagged.
    with pytest.raises(MlflowException, match="already registers"):
        sdk["registry"].register_tokenized_model(uri, name, token, "accuracy", 0.9)
    assert len(versions_of(server, name)) == 2


def test_models_uri_by_alias_is_idempotent_too(server, sdk):
    base, token = unique("sdk-base"), unique("sdk-token")
    first = sdk["registry"].register_tokenized_model(
        f"runs:/{sdk['runs'][1]}/model", base, token, "f1", 0.7
    )
    mlflow.MlflowClient(server.url).set_registered_model_alias(base, "champion", first.version)
    copy, copy_token = unique("sdk-copy"), unique("sdk-token")
    made = sdk["registry"].register_tokenized_model(
        f"models:/{base}@champion", copy, copy_token, "f1", 0.7
    )
    again = sdk["registry"].register_tokenized_model(
        f"models:/{base}@champion", copy, copy_token, "f1", 0.7
    )
    assert again == made and made.run_id == sdk["runs"][1]
    assert made.source == f"models:/{base}/{first.version}"  # pinned, not following the alias
    assert len(versions_of(server, copy)) == 1


def test_stock_client_models_uri_sources_are_never_a_500(server, sdk, monkeypatch):
    """MLflow < 3.17 cannot register from an alias and answered it, and a missing version,
    with a 500 (retried for minutes): now a 400 and a 404; 3.17 resolves the alias itself."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    base = unique("sdk-src")
    first = sdk["registry"].register_tokenized_model(
        f"runs:/{sdk['runs'][0]}/model", base, unique("sdk-token"), "f1", 0.7
    )
    client = mlflow.MlflowClient(server.url)
    client.set_registered_model_alias(base, "champion", first.version)
    copy = unique("sdk-copy")
    client.create_registered_model(copy)
    with pytest.raises(MlflowException) as missing:
        client.create_model_version(copy, f"models:/{base}/99", await_creation_for=0)
    assert missing.value.get_http_status_code() == 404, missing.value
    resolves_aliases = Version(mlflow.__version__).release[:2] >= (3, 17)
    try:
        made = client.create_model_version(copy, f"models:/{base}@champion", await_creation_for=0)
    except MlflowException as refused:
        assert not resolves_aliases and refused.get_http_status_code() == 400, refused
        assert f"models:/{base}@champion" in refused.message
    else:
        assert resolves_aliases and made.source == f"models:/{base}/{first.version}"


@pytest.mark.parametrize(
    "token_id, metric, value, bad_tag",
    [
        ("-starts-with-dash", "accuracy", 0.5, "hokusai_token_id"),
        ("has space", "accuracy", 0.5, "hokusai_token_id"),
        ("x" * 65, "accuracy", 0.5, "hokusai_token_id"),
        ("ok-token", "not_a_metric", 0.5, "benchmark_metric"),
        ("ok-token", "accuracy", 1.5, "benchmark_value"),
        ("ok-token", "rmse", -0.1, "benchmark_value"),
        ("ok-token", "accuracy", float("nan"), "benchmark_value"),
        ("ok-token", "accuracy", "0,5", "benchmark_value"),
    ],
)
def test_invalid_inputs_write_nothing(server, sdk, token_id, metric, value, bad_tag):
    name = unique("sdk-invalid")
    with pytest.raises(TagRuleError) as info:
        sdk["registry"].register_tokenized_model(
            f"runs:/{sdk['runs'][0]}/model", name, token_id, metric, value
        )
    assert info.value.tag == bad_tag
    assert not model_exists(server, name)


def test_token_tags_cannot_hide_in_extra_tags(server, sdk):
    name = unique("sdk-extra")
    with pytest.raises(TagRuleError, match="through the arguments"):
        sdk["registry"].register_tokenized_model(
            f"runs:/{sdk['runs'][0]}/model",
            name,
            unique("tok"),
            "accuracy",
            0.5,
            tags={"hokusai_token_id": "another"},
        )
    assert not model_exists(server, name)


def test_server_refusal_leaves_no_version(server, sdk):
    """The token already belongs to another model: the server answers 409 on the token tag,
    the last one written, and the SDK removes the version (and the model) it had made."""
    owner, token = unique("sdk-owner"), unique("sdk-token")
    sdk["registry"].register_tokenized_model(
        f"runs:/{sdk['runs'][0]}/model", owner, token, "accuracy", 0.5
    )
    thief = unique("sdk-thief")
    with pytest.raises(MlflowException) as info:
        sdk["registry"].register_tokenized_model(
            f"runs:/{sdk['runs'][1]}/model", thief, token, "accuracy", 0.6
        )
    assert "RESOURCE_ALREADY_EXISTS" in str(info.value) and owner in str(info.value)
    assert not model_exists(server, thief)
    assert len(versions_of(server, owner)) == 1


def test_failed_tagging_on_an_existing_model_removes_only_the_new_version(server, sdk):
    name, token = unique("sdk-partial"), unique("sdk-token")
    registry = sdk["registry"]
    registry.register_tokenized_model(f"runs:/{sdk['runs'][0]}/model", name, token, "mse", 0.2)
    # MLflow itself refuses this tag key, after the benchmark tags were already written.
    with pytest.raises(MlflowException, match="INVALID_PARAMETER_VALUE"):
        registry.register_tokenized_model(
            f"runs:/{sdk['runs'][1]}/model", name, token, "mse", 0.1, tags={"../escape": "x"}
        )
    versions = versions_of(server, name)
    assert [v["version"] for v in versions] == ["1"]
    assert tags_of(versions[0])["benchmark_value"] == "0.2"


def test_unknown_model_uri_writes_nothing(server, sdk):
    name = unique("sdk-missing")
    with pytest.raises(MlflowException, match="No model found"):
        sdk["registry"].register_tokenized_model(
            f"runs:/{sdk['runs'][0]}/no-such-model", name, unique("tok"), "accuracy", 0.5
        )
    with pytest.raises(MlflowException):
        sdk["registry"].register_tokenized_model(
            "runs:/0123456789abcdef0123456789abcdef/model", name, unique("tok"), "accuracy", 0.5
        )
    assert not model_exists(server, name)
