"""What a new user of `mlflow-hokusai` trips over (issue 26): a command run in the wrong folder
creates nothing, errors name the flags, a key given for its id is never echoed, one word for
"no limits" and one name for the client's address, help that lists every audit event, a
version, and no third-party warnings among the CLI's messages."""

import json
import os
import subprocess
import sys

import pytest

from mlflow_hokusai import __version__
from mlflow_hokusai.keys.format import DISPLAY_PREFIX_LENGTH
from mlflow_hokusai.store.audit import EVENTS
from tests.server import clean_env


def _run(cwd, *args, ok=True, **env):
    result = subprocess.run(
        [sys.executable, "-m", "mlflow_hokusai.cli", *args],
        cwd=cwd,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (result.returncode == 0) == ok, result.stderr
    return result


@pytest.fixture
def cli(tmp_path):
    """The CLI on ``keys.db`` in ``tmp_path``, made with ``db upgrade`` as a new user would."""
    uri = f"sqlite:///{tmp_path / 'keys.db'}"
    _run(tmp_path, "db", "upgrade", "--database-uri", uri)

    def run(*args, ok=True):
        return _run(tmp_path, *args, "--database-uri", uri, ok=ok)

    run.path = str(tmp_path / "keys.db")
    return run


def _refused(result, looked_at: str) -> None:
    assert result.returncode != 0
    message = " ".join(result.stderr.split())
    assert looked_at in message, message
    for way in ("--database-uri", "HOKUSAI_DATABASE_URI", "where the server runs", "db upgrade"):
        assert way in message, message
    assert "Traceback" not in result.stderr


def test_no_command_but_db_upgrade_creates_a_database(tmp_path):
    expected = str(tmp_path / "hokusai_auth.db")  # the default, relative to this folder
    for command in (
        ["keys", "list"],
        ["keys", "create", "--user", "alice"],
        ["keys", "revoke", "0123456789abcdef"],
        ["keys", "rotate", "0123456789abcdef"],
        ["keys", "update", "0123456789abcdef", "--unlimited"],
        ["audit", "list"],
        ["federation", "list"],
    ):
        result = _run(tmp_path, *command, ok=False)
        assert result.stdout == ""  # no key printed
        _refused(result, expected)
    elsewhere = tmp_path / "elsewhere.db"
    _refused(
        _run(tmp_path, "keys", "list", "--database-uri", f"sqlite:///{elsewhere}", ok=False),
        str(elsewhere),
    )
    _refused(
        _run(tmp_path, "keys", "list", ok=False, HOKUSAI_DATABASE_URI=f"sqlite:///{elsewhere}"),
        str(elsewhere),
    )
    assert os.listdir(tmp_path) == []  # nothing was created

    assert expected in _run(tmp_path, "db", "upgrade").stderr
    created = _run(tmp_path, "keys", "create", "--user", "alice")
    key = created.stdout.strip()
    assert created.stdout == key + "\n"
    assert f"sqlite:///{expected}" in created.stderr and key not in created.stderr


@pytest.mark.postgres
def test_a_server_database_without_our_tables_is_refused(tmp_path, postgres):
    uri = postgres.create_database("cli_first_hour")
    _refused(_run(tmp_path, "keys", "list", "--database-uri", uri, ok=False), uri)
    _refused(_run(tmp_path, "audit", "list", "--database-uri", uri, ok=False), uri)
    _run(tmp_path, "db", "upgrade", "--database-uri", uri)
    created = _run(tmp_path, "keys", "create", "--user", "alice", "--database-uri", uri)
    assert "cli_first_hour" in created.stderr


def test_errors_name_the_flag_not_the_field(cli):
    cases = [
        (["--rate-limit", "1000/day"], "--rate-limit must be", "'rate_limit'"),
        (["--expires-in-days", "0"], "--expires-in-days must be", "'expires_in_days'"),
        (["--allow-ip", "10.1.2.3/8"], "--allow-ip entry", "'allowed_ips'"),
        (["--model", "a*b"], "--model pattern", "'registered_models'"),
        (["--experiment", "=READ"], "--experiment entries must", "'experiments'"),
    ]
    for options, said, not_said in cases:
        stderr = cli("keys", "create", "--user", "bob", *options, ok=False).stderr
        assert said in stderr and not_said not in stderr, stderr
    cli("keys", "create", "--user", "bob")
    key_id = json.loads(cli("keys", "list", "--format", "json").stdout)[0]["id"]
    # A rule the key manager checks (not a click callback) names the flag too.
    stderr = cli("keys", "rotate", key_id, "--grace", "30d", ok=False).stderr
    assert "--grace must be" in stderr and "'grace_seconds'" not in stderr, stderr


def test_a_key_given_for_its_id_is_found_and_never_echoed(cli):
    key = cli("keys", "create", "--user", "carol").stdout.strip()
    [record] = json.loads(cli("keys", "list", "--format", "json").stdout)

    rotated = cli("keys", "rotate", key)
    new_key = rotated.stdout.strip()
    assert new_key != key and key not in rotated.stderr and record["id"] in rotated.stderr

    mistyped = new_key[:-1] + ("A" if new_key[-1] != "A" else "B")
    refused = cli("keys", "revoke", mistyped, ok=False)
    assert mistyped not in refused.stderr + refused.stdout
    assert new_key[:DISPLAY_PREFIX_LENGTH] in refused.stderr and "keys list" in refused.stderr

    again = cli("keys", "revoke", key)  # rotated away (revoked): still found by its digest
    assert key not in again.stderr and record["id"] in again.stderr, again.stderr

    revoked = cli("keys", "revoke", new_key)
    assert new_key not in revoked.stderr + revoked.stdout and "Revoked key" in revoked.stderr
    statuses = {
        k["id"]: k["status"] for k in json.loads(cli("keys", "list", "--format", "json").stdout)
    }
    assert set(statuses.values()) == {"revoked"}

    from mlflow_hokusai.keys.format import generate_key

    stranger = generate_key()
    unknown = cli("keys", "update", stranger, "--unlimited", ok=False)
    assert stranger not in unknown.stderr and stranger[:DISPLAY_PREFIX_LENGTH] in unknown.stderr
    assert cli.path in unknown.stderr  # names the database looked in


def test_all_means_unlimited_and_none_means_nothing(cli):
    cli("keys", "create", "--user", "dave", "--experiment", "train", "--model", "rf")
    [record] = json.loads(cli("keys", "list", "--format", "json").stdout)
    no_models = cli("keys", "update", record["id"], "--no-models").stderr
    assert "models=none" in no_models
    unlimited = cli("keys", "update", record["id"], "--unlimited").stderr
    assert "none" not in unlimited and "no resource limits" in unlimited, unlimited
    header, row = cli("keys", "list").stdout.splitlines()
    cells = dict(zip(header.split(), row.split(), strict=True))
    assert (cells["LIMITS"], cells["RATE_LIMIT"], cells["ALLOWED_IPS"]) == (
        "all",
        "unlimited",
        "any",
    )


def test_the_audit_trail_says_address(cli):
    cli("keys", "create", "--user", "erin")
    [event] = json.loads(cli("audit", "list", "--format", "json").stdout)
    assert event["address"] == "local" and "source" not in event
    assert "ADDRESS" in cli("audit", "list").stdout.splitlines()[0].split()


def test_help_lists_every_event_and_the_version_is_printed(tmp_path):
    for command in (["audit", "--help"], ["audit", "list", "--help"]):
        shown = _run(tmp_path, *command).stdout
        for name, meaning in EVENTS.items():
            assert f"{name}: {meaning}" in shown, (name, shown)
    version = _run(tmp_path, "--version").stdout
    assert version.startswith(f"mlflow-hokusai {__version__} (MLflow 3.")


def test_no_third_party_warning_reaches_stderr(cli):
    created = cli("keys", "create", "--user", "frank")  # imports MLflow's server modules
    assert "Warning" not in created.stderr, created.stderr
    assert "Created user 'frank'" in created.stderr
