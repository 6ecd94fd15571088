"""``mlflow-hokusai``: manage API keys and the key database offline.

Every command works directly on ``--database-uri`` (default: the configured database), so an
operator can create the first keys before the server ever starts. Commands that make a key
print the key ALONE on stdout; everything else goes to stderr, so
``KEY=$(mlflow-hokusai keys create --user alice)`` works.
"""

from __future__ import annotations

import json
import secrets

import click

from mlflow_hokusai.config import ConfigError, load_settings

MAX_EXPIRY_DAYS = 3650
MAX_NAME_LENGTH = 255


def _settings():
    try:
        return load_settings()
    except ConfigError as e:
        raise click.UsageError(str(e)) from e


def _database_option(func):
    return click.option(
        "--database-uri",
        default=None,
        metavar="URI",
        help="Key/auth database (default: HOKUSAI_DATABASE_URI, the config file, "
        "or sqlite:///hokusai_auth.db).",
    )(func)


def _open_store(database_uri: str | None):
    from mlflow_hokusai.store.engine import get_engine, startup_lock, upgrade
    from mlflow_hokusai.store.keys import KeyStore

    engine = get_engine(database_uri or _settings().database_uri)
    with startup_lock(engine):
        upgrade(engine)
    return KeyStore(engine)


def _note(message: str) -> None:
    click.echo(message, err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """Manage mlflow-hokusai API keys and its database."""


@cli.group()
def keys():
    """Create, list, revoke and rotate API keys."""


@keys.command("create")
@click.option("--user", "username", required=True, help="MLflow user who will own the key "
              "(created, with an unusable random password, if missing).")
@click.option("--admin", is_flag=True, help="Make the user an MLflow admin.")
@click.option("--scope", type=click.Choice(["read", "write"]), default="write", show_default=True,
              help="'read' keys may only perform reads, whatever the user may do.")
@click.option("--name", default="", help="A label to recognise the key by.")
@click.option("--expires-in-days", type=click.IntRange(1, MAX_EXPIRY_DAYS), default=None,
              help="Expire the key after this many days (default: never).")
@_database_option
def create_key(username, admin, scope, name, expires_in_days, database_uri):
    """Create a key for USER and print it (alone) on stdout."""
    from mlflow_hokusai import _mlflow

    username = username.strip()
    if not username:
        raise click.BadParameter("must not be empty", param_hint="--user")
    if len(name) > MAX_NAME_LENGTH:
        raise click.BadParameter(f"at most {MAX_NAME_LENGTH} characters", param_hint="--name")
    settings = _settings()
    uri = database_uri or settings.database_uri
    store = _open_store(uri)
    users = _mlflow.user_store(uri)
    if not users.has_user(username):
        users.create_user(username, secrets.token_urlsafe(32), is_admin=admin)
        _note(f"Created user {username!r}{' (admin)' if admin else ''}.")
    elif admin and not users.get_user(username).is_admin:
        users.update_user(username, is_admin=True)
        _note(f"Made user {username!r} an admin.")
    key, record = store.create(
        username,
        environment=settings.key_environment,
        name=name,
        scope=scope,
        expires_in_days=expires_in_days,
    )
    expiry = f", expires {record.expires_at.isoformat()}Z" if record.expires_at else ""
    _note(f"Created {scope} key {record.id} ({record.display_prefix}…) for {username!r}{expiry}.")
    click.echo(key)


@keys.command("list")
@click.option("--user", "username", default=None, help="Only this user's keys.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@_database_option
def list_keys(username, fmt, database_uri):
    """List keys (never the keys themselves: id, prefix and metadata)."""
    records = [r.to_dict() for r in _open_store(database_uri).list(username)]
    if fmt == "json":
        click.echo(json.dumps(records, indent=2))
        return
    columns = ["id", "prefix", "username", "name", "scope", "status", "created_at",
               "expires_at", "last_used_at"]
    rows = [[str(r[c] or "-") for c in columns] for r in records]
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)))
    for row in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def _existing(store, key_id):
    from mlflow_hokusai.store.keys import KeyNotFound

    try:
        return store.get(key_id)
    except KeyNotFound:
        raise click.ClickException(f"no API key with id {key_id!r}") from None


@keys.command("revoke")
@click.argument("key_id")
@_database_option
def revoke_key(key_id, database_uri):
    """Revoke KEY_ID: every server refuses it within a second."""
    store = _open_store(database_uri)
    _existing(store, key_id)
    record = store.revoke(key_id)
    _note(f"Revoked key {record.id} ({record.display_prefix}…) of {record.username!r}.")


@keys.command("rotate")
@click.argument("key_id")
@_database_option
def rotate_key(key_id, database_uri):
    """Revoke KEY_ID and print a new key (alone) with the same owner, name, scope and lifetime."""
    store = _open_store(database_uri)
    old = _existing(store, key_id)
    if old.status() == "revoked":
        raise click.ClickException(f"key {key_id!r} is revoked; create a new key instead")
    key, record = store.rotate(key_id, environment=_settings().key_environment)
    _note(f"Rotated key {old.id} -> {record.id} ({record.display_prefix}…) for {record.username!r}.")
    click.echo(key)


@cli.group()
def db():
    """Database maintenance."""


@db.command("upgrade")
@_database_option
def db_upgrade(database_uri):
    """Apply mlflow-hokusai's and MLflow auth's migrations (idempotent; the server also does
    this at start-up)."""
    from mlflow_hokusai import _mlflow

    uri = database_uri or _settings().database_uri
    _open_store(uri)
    _mlflow.user_store(uri)
    _note(f"Database {uri} is up to date.")


if __name__ == "__main__":
    cli()
