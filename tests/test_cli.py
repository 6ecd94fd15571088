"""`mlflow-hokusai` offline on a database file: the key alone on stdout, clear errors."""

import json
import subprocess
import sys

import pytest

from mlflow_hokusai.keys.format import parse_key
from tests.server import clean_env


@pytest.fixture
def cli(tmp_path):
    uri = f"sqlite:///{tmp_path / 'keys.db'}"

    def run(*args, ok=True):
        result = subprocess.run(
            [sys.executable, "-m", "mlflow_hokusai.cli", *args, "--database-uri", uri]
            if args and args[0] in ("keys", "db") and "--help" not in args
            else [sys.executable, "-m", "mlflow_hokusai.cli", *args],
            cwd=tmp_path,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert (result.returncode == 0) == ok, result.stderr
        return result

    run("db", "upgrade")  # only db upgrade creates a database (issue 26)
    return run


def test_create_prints_the_key_alone(cli):
    result = cli("keys", "create", "--user", "alice", "--name", "laptop", "--expires-in-days", "30")
    key = result.stdout.strip()
    assert result.stdout == key + "\n"
    assert parse_key(key).environment == "live"
    assert "Created user 'alice'" in result.stderr and key not in result.stderr


def test_list_rotate_revoke(cli):
    first = cli("keys", "create", "--user", "bob", "--scope", "read").stdout.strip()
    listed = json.loads(cli("keys", "list", "--format", "json").stdout)
    assert [(k["username"], k["scope"], k["status"]) for k in listed] == [("bob", "read", "active")]
    assert first not in json.dumps(listed)
    key_id = listed[0]["id"]

    rotated = cli("keys", "rotate", key_id).stdout.strip()
    assert parse_key(rotated) and rotated != first
    after = {k["id"]: k for k in json.loads(cli("keys", "list", "--format", "json").stdout)}
    assert after[key_id]["status"] == "revoked"
    (new,) = [k for k in after.values() if k["id"] != key_id]
    assert (new["username"], new["scope"], new["status"]) == ("bob", "read", "active")

    cli("keys", "revoke", new["id"])
    table = cli("keys", "list", "--user", "bob").stdout
    assert table.splitlines()[0].split()[:3] == ["ID", "PREFIX", "USERNAME"]
    assert table.count("revoked") == 2


def test_errors_are_clear(cli):
    assert "no API key with id" in cli("keys", "revoke", "nope", ok=False).stderr
    assert "no API key with id" in cli("keys", "rotate", "nope", ok=False).stderr
    assert "--scope" in cli("keys", "create", "--user", "x", "--scope", "admin", ok=False).stderr
    bad_days = cli("keys", "create", "--user", "x", "--expires-in-days", "-1", ok=False)
    assert "--expires-in-days" in bad_days.stderr


def test_db_upgrade_is_idempotent(cli):
    cli("db", "upgrade")
    assert "up to date" in cli("db", "upgrade").stderr


def test_every_command_has_help(cli):
    for command in (
        [],
        ["keys"],
        ["keys", "create"],
        ["keys", "list"],
        ["keys", "revoke"],
        ["keys", "rotate"],
        ["db"],
        ["db", "upgrade"],
    ):
        out = cli(*command, "--help").stdout
        assert "Usage:" in out
    assert "--database-uri" in cli("keys", "create", "--help").stdout
