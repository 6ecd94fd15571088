"""Every MLflow-private name we read or patch exists on the MLflow under test (run in both tox
envs: the floor, 3.15.x, and the latest), and a missing one is reported, not ignored."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import mlflow
import pytest

from mlflow_hokusai._mlflow import targets
from mlflow_hokusai._mlflow.targets import AUTH, TARGETS, Target

PACKAGE = Path(__file__).resolve().parent.parent / "mlflow_hokusai"


@pytest.fixture(scope="module", autouse=True)
def auth_engine_config(tmp_path_factory):
    """``mlflow.server.auth`` reads its config at import: give it a throwaway database."""
    directory = tmp_path_factory.mktemp("targets")
    config = directory / "auth.ini"
    config.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{directory / 'auth.db'}\n"
        "admin_username = admin\nadmin_password = password1234\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(config))
        yield


EXPECTED_HERE = [t for t in TARGETS if t.expected(mlflow.__version__)]


@pytest.mark.parametrize("target", EXPECTED_HERE, ids=lambda t: t.name)
def test_target_exists(target):
    assert target.find() is not None, f"MLflow {mlflow.__version__} has no {target.name}"


def test_s3_repository_keeps_its_bucket_owner_params():
    """An instance attribute (set in ``__init__``), so checked on an instance."""
    from mlflow.store.artifact.s3_artifact_repo import S3ArtifactRepository

    assert isinstance(S3ArtifactRepository("s3://bucket/path")._bucket_owner_params, dict)


def test_nothing_is_missing_here():
    assert targets.missing() == []
    targets.check()  # does not raise


def test_a_missing_required_name_stops_start_up():
    gone = Target(AUTH, "_no_such_validator_table", "a test")
    with pytest.raises(
        RuntimeError,
        match=rf"MLflow {mlflow.__version__}: it has no "
        r"mlflow\.server\.auth\._no_such_validator_table",
    ):
        targets.check((gone,))


def test_a_missing_optional_name_is_a_warning(caplog):
    gone = Target(AUTH, "_no_such_cache_hook", "a test", required=False)
    with caplog.at_level(logging.WARNING, logger="mlflow_hokusai"):
        targets.check((gone,))
    assert f"MLflow {mlflow.__version__} has no mlflow.server.auth._no_such_cache_hook" in (
        caplog.text
    )


def _private_names_used(path: Path) -> set[str]:
    """``_names`` the module takes from MLflow: attributes and imports starting with '_'."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mlflow."):
            names.update(a.name for a in node.names if a.name.startswith("_"))
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            if not node.attr.startswith("__"):
                names.add(node.attr)
    return names


def test_every_private_name_in_the_fence_is_listed():
    listed = {part for t in TARGETS for part in t.attribute.split(".")}
    ours = {"_allow", "_find", "_patterns", "_bucket_owner_params", "_CACHED_STORE_READS"}
    modules = sorted((PACKAGE / "_mlflow").glob("*.py"))
    assert {"accessors.py", "asgi_patches.py", "resource_limit_patches.py", "patches.py"} <= {
        module.name for module in modules
    }
    for module in modules:
        used = _private_names_used(module) - ours
        assert used <= listed, f"{module.name} uses {sorted(used - listed)} not in targets.py"


def test_no_private_mlflow_name_outside_the_fence():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if "_mlflow" in path.parts:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            module = node.module or "" if isinstance(node, ast.ImportFrom) else ""
            if module == "mlflow" or module.startswith("mlflow."):
                private = [a.name for a in node.names if a.name.startswith("_")]
                if private or "._" in f".{module}":
                    offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert not offenders, offenders


def test_the_run_check_reads_only_the_run_experiment():
    """``patches.cache_authorization_lookups`` remembers, per run, only its info for the
    worker's life: right only while MLflow's run check loads a run (``_fetch_or_none`` with
    ``get_run``) in one place and reads nothing from it but ``run.info.experiment_id``."""
    import inspect
    import re

    from mlflow.server import auth

    if not hasattr(auth, "_fetch_or_none"):
        pytest.skip(f"MLflow {mlflow.__version__} loads runs inline (the patch is off)")
    module = inspect.getsource(auth)
    assert len(re.findall(r"_fetch_or_none\(\s*_get_tracking_store\(\)\.get_run\b", module)) == 1
    check = inspect.getsource(auth._run_requirement)
    assert re.search(r"_fetch_or_none\(\s*_get_tracking_store\(\)\.get_run\b", check)
    reads = set(re.findall(r"\brun\.([\w.]+)", check))
    assert reads == {"info.experiment_id"}, reads
