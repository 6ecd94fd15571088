"""``mlflow-hokusai db``: database maintenance."""

from __future__ import annotations

import click

from mlflow_hokusai.cli.options import database_option, note, open_store, settings


@click.group()
def db():
    """Database maintenance."""


@db.command("upgrade")
@database_option
def db_upgrade(database_uri):
    """Apply mlflow-hokusai's and MLflow auth's migrations (idempotent; the server also does
    this at start-up)."""
    uri = database_uri or settings().database_uri
    open_store(uri)
    note(f"Database {uri} is up to date.")
