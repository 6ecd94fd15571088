"""``mlflow-hokusai db``: database maintenance."""

from __future__ import annotations

import click

from mlflow_hokusai.cli.options import database_option, note, open_store, settings, shown_uri


@click.group()
def db():
    """Database maintenance."""


@db.command("upgrade")
@database_option
def db_upgrade(database_uri):
    """Apply mlflow-hokusai's and MLflow auth's migrations (idempotent; the server also does
    this at start-up). The one command that creates a database that does not exist yet."""
    uri = database_uri or settings().database_uri
    open_store(uri, create=True)
    note(f"Database {shown_uri(uri)} is up to date.")
