"""``mlflow-hokusai audit``: the audit trail of key events, read from the database or, online,
from a server's REST API."""

from __future__ import annotations

import click

from mlflow_hokusai.cli.options import (
    database_option,
    format_option,
    migrated_engine,
    open_backend,
    run,
    settings,
    show,
    tracking_option,
)
from mlflow_hokusai.store.audit import EVENTS as AUDIT_EVENTS


@click.group()
def audit():
    """The audit trail of key events (created, rotated, revoked, expired-use, denied-use)."""


@audit.command("list")
@click.option("--user", default=None, help="Only events about this user's keys or by this actor.")
@click.option(
    "--since",
    default=None,
    metavar="WHEN",
    help="Only events since WHEN: an ISO date/time (2026-01-31, "
    "2026-01-31T12:00:00Z) or a duration ago (30m, 1h, 7d, 2w).",
)
@click.option(
    "--event", type=click.Choice(list(AUDIT_EVENTS)), default=None, help="Only this kind of event."
)
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the newest N events.")
@format_option
@database_option
@tracking_option
def audit_list(user, since, event, limit, fmt, database_uri, tracking_uri):
    """List audit events, oldest first (times in UTC). Online, an admin's key sees every
    event and anyone else's key the events about their own keys."""
    from mlflow_hokusai.keys.audit import parse_since

    try:
        since_at = parse_since(since) if since else None
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--since") from None
    if tracking_uri:
        backend = open_backend(database_uri, tracking_uri)
        records = run(
            lambda: backend.audit_events(user=user, since=since, event=event, limit=limit)
        )
    else:
        from mlflow_hokusai.store.audit import AuditStore

        # Only our tables are needed: skip MLflow's auth store (a few seconds of imports).
        engine = migrated_engine(database_uri or settings().database_uri)
        found = AuditStore(engine).list(user=user, since=since_at, event=event, limit=limit)
        records = [r.to_dict() for r in found]
    show(records, fmt, _EVENT_COLUMNS, lambda r: [str(r[c] or "-") for c in _EVENT_COLUMNS])


_EVENT_COLUMNS = ["time", "event", "actor", "key_id", "username", "source", "detail"]
