"""What every command group shares: the configured settings, the ``--database-uri``,
``--tracking-uri`` and ``--format`` options, opening the database or a backend, turning rule
violations into clean CLI errors, notes on stderr and aligned tables on stdout."""

from __future__ import annotations

import json
import os
import re

import click
import sqlalchemy as sa

from mlflow_hokusai.config import ConfigError, load_settings, parse_duration
from mlflow_hokusai.keys.lifetime import lifetime_rules
from mlflow_hokusai.keys.management import parse_allowed_ips, parse_key_rate_limit, parse_username
from mlflow_hokusai.store.keys import SCOPES
from mlflow_hokusai.text import printable


def settings():
    """The configured settings; a bad setting is a usage error."""
    try:
        return load_settings()
    except ConfigError as e:
        raise click.UsageError(str(e)) from e


def database_option(func):
    return click.option(
        "--database-uri",
        default=None,
        metavar="URI",
        help="Key/auth database (default: HOKUSAI_DATABASE_URI, the config file, "
        "or sqlite:///hokusai_auth.db in the current folder): the server's. It must exist; "
        "only 'db upgrade' creates one.",
    )(func)


def tracking_option(func):
    return click.option(
        "--tracking-uri",
        default=None,
        metavar="URI",
        help="Online mode: call this server's REST API with the key in HOKUSAI_API_KEY (else "
        "MLFLOW_TRACKING_TOKEN), with that key's rights, instead of opening the database.",
    )(func)


def format_option(func):
    return click.option(
        "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
    )(func)


def shown_uri(uri: str) -> str:
    """``uri`` as the operator should see it: a SQLite file by its absolute path (a relative
    one depends on the folder the command runs in), a server's without its password."""
    from sqlalchemy.engine import make_url

    from mlflow_hokusai.store.engine import sqlite_path

    path = sqlite_path(uri)
    if path:
        return f"sqlite:///{path}"
    return make_url(uri).render_as_string(hide_password=True)


def _no_database(looked_at: str) -> click.ClickException:
    return click.ClickException(
        f"{looked_at}. Point at the server's database with --database-uri or "
        "HOKUSAI_DATABASE_URI, or run where the server runs (a relative sqlite:/// path is "
        "relative to the current folder); 'mlflow-hokusai db upgrade' creates a new database."
    )


def existing_engine(uri: str):
    """The engine of ``uri`` if it already holds our tables; else a clean error naming what
    was looked at. Nothing is created: a command run in the wrong folder must not make an
    empty database and keys no server knows (only ``db upgrade`` creates one)."""
    from mlflow_hokusai.store.engine import VERSION_TABLE, get_engine, sqlite_path

    path = sqlite_path(uri)
    if path is not None and not os.path.isfile(path):
        raise _no_database(f"no key database at {path} (from {uri}); nothing was created")
    engine = get_engine(uri)
    server = path is None and engine.url.get_backend_name() != "sqlite"  # not in memory
    if server and not sa.inspect(engine).has_table(VERSION_TABLE):
        raise _no_database(f"no mlflow-hokusai tables in {shown_uri(uri)}")
    return engine


def migrated_engine(uri: str, *, mlflow_users: bool = False, create: bool = False):
    """The engine of ``uri`` with our tables migrated (one process at a time), and with
    ``mlflow_users`` MLflow's auth tables too (keys are joined to MLflow's users). Only with
    ``create`` (``db upgrade``) may the database be new; otherwise see ``existing_engine``."""
    from mlflow_hokusai.store.engine import get_engine, startup_lock, upgrade

    engine = get_engine(uri) if create else existing_engine(uri)
    with startup_lock(engine):
        upgrade(engine)
        if mlflow_users and not sa.inspect(engine).has_table("users"):
            # Importing MLflow's auth engine costs seconds: only when needed.
            from mlflow_hokusai import _mlflow

            _mlflow.user_store(uri)
    return engine


def open_store(database_uri: str | None, *, create: bool = False):
    """Migrate ours and MLflow's auth tables, open ours (``create``: the database may be
    new)."""
    from mlflow_hokusai.store.keys import KeyStore

    uri = database_uri or settings().database_uri
    return KeyStore(migrated_engine(uri, mlflow_users=True, create=create))


class LazyUsers:
    """MLflow's user store, opened on first use (only ``keys create`` needs it)."""

    def __init__(self, uri: str):
        self._uri = uri
        self._store = None

    def __getattr__(self, name):
        if self._store is None:
            from mlflow_hokusai import _mlflow

            self._store = _mlflow.user_store(self._uri)
        return getattr(self._store, name)


def note(message: str) -> None:
    """A message for the operator, on stderr (stdout is for keys and ids alone)."""
    click.echo(message, err=True)


# The shared validators name the REST API's fields; the CLI's messages name its flags.
FLAGS = {
    "username": "--user",
    "name": "--name",
    "scope": "--scope",
    "expires_in_days": "--expires-in-days",
    "allowed_ips": "--allow-ip",
    "rate_limit": "--rate-limit",
    "experiments": "--experiment",
    "registered_models": "--model",
    "workspace": "--workspace",
    "can_create": "--can-create",
    "unlimited": "--unlimited",
    "grace_seconds": "--grace",
    "key_id": "KEY_ID",
    "lifetime_seconds": "--lifetime",
    "issuer": "--issuer",
    "audience": "--audience",
    "subject": "--subject",
    "claims": "--claim",
    "policy_id": "POLICY_ID",
}
_LEADING_FIELD = re.compile(r"^(?:[A-Z_]+: )?'([a-z_]+)'")


def in_flags(message: str, flag: str | None = None) -> str:
    """``message`` with the field it starts with (``'rate_limit' must …``) named as the CLI's
    flag (``--rate-limit must …``): ``flag``, else the flag of that field. The error code
    MLflow's client puts first (``INVALID_PARAMETER_VALUE: ``) goes too."""
    match = _LEADING_FIELD.match(message)
    if not match:
        return message
    name = flag or FLAGS.get(match.group(1))
    return name + message[match.end() :] if name else message


def validated(parse):
    """A click callback running one of ``keys.management``'s validators (one implementation
    for the CLI and the REST API); its message names the option's flag."""

    def callback(ctx, param, value):
        from mlflow_hokusai.errors import HokusaiError

        try:
            return value if value is None else parse(value)
        except HokusaiError as e:
            raise click.UsageError(in_flags(e.message, param.opts[0]), ctx) from None

    return callback


def duration(ctx, param, value):
    """A click callback: ``30m``, ``24h``, ``7d`` … -> seconds."""
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def open_backend(database_uri, tracking_uri):
    """Offline (the database) or online (a server's REST API); see ``cli/backends.py``."""
    from mlflow_hokusai.cli import backends

    if tracking_uri:
        from mlflow_hokusai.client.auth_provider import configured_key

        if database_uri:
            raise click.UsageError("use either --tracking-uri (online) or --database-uri")
        key = configured_key()
        if not key:
            raise click.UsageError(
                "--tracking-uri needs your API key in HOKUSAI_API_KEY (or MLFLOW_TRACKING_TOKEN)"
            )
        return backends.Online(tracking_uri, key)
    configured = settings()
    uri = database_uri or configured.database_uri
    store = open_store(uri)
    return backends.Offline(
        store,
        LazyUsers(uri),
        configured.key_environment,
        note,
        lifetime_rules(configured),
        configured.default_rate_limit,
        where=shown_uri(uri),
        webhooks=bool(configured.key_webhook_urls),
    )


def run(action):
    """Run ``action``; turn rule violations and server errors into a clean CLI error."""
    from mlflow.exceptions import MlflowException

    from mlflow_hokusai.errors import HokusaiError

    try:
        return action()
    except HokusaiError as e:
        raise click.ClickException(in_flags(e.message)) from None
    except MlflowException as e:
        raise click.ClickException(in_flags(e.message)) from None


def table(columns, rows):
    """Aligned columns; cells escaped (``text.printable``) so stored data cannot forge rows."""
    rows = [[printable(cell) for cell in row] for row in rows]
    widths = [max([len(c), *(len(row[i]) for row in rows)]) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def show(records: list[dict], fmt: str, columns: list[str], row) -> None:
    """``records`` as JSON, or as a table of ``columns`` (``row(record)`` gives the cells)."""
    if fmt == "json":
        click.echo(json.dumps(records, indent=2))
        return
    table(columns, [row(record) for record in records])


# Options more than one command takes, each with its own help text.


def user_option(help: str):
    return click.option(
        "--user", "username", default=None, callback=validated(parse_username), help=help
    )


def scope_option(help: str):
    choices = click.Choice(list(SCOPES))
    return click.option("--scope", type=choices, default="write", show_default=True, help=help)


def rate_limit_option(help: str):
    return click.option(
        "--rate-limit",
        default=None,
        metavar="N/second|minute|hour",
        callback=validated(parse_key_rate_limit),
        help=help,
    )


def allow_ip_option(help: str):
    return click.option(
        "--allow-ip",
        "allowed_ips",
        multiple=True,
        metavar="ADDRESS|CIDR",
        callback=validated(parse_allowed_ips),
        help=help,
    )
