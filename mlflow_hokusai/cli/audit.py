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


def _event_list() -> str:
    """Every event kind and what it means, from ``store.audit.EVENTS`` (for the help)."""
    return "\n".join(f"  {name}: {meaning}." for name, meaning in AUDIT_EVENTS.items())


@click.group(help=f"The audit trail of key events. The events:\n\n\b\n{_event_list()}")
def audit():
    """The help is built from ``store.audit.EVENTS``."""


@audit.command(
    "list",
    short_help="List audit events, oldest first (times in UTC).",
    help="List audit events, oldest first (times in UTC); ADDRESS is the client's address "
    "('local' for this command offline). Online, an admin's key sees every event and anyone "
    f"else's key the events about their own keys. The events:\n\n\b\n{_event_list()}",
)
@click.option("--user", default=None, help="Only events about this user's keys or by this actor.")
@click.option(
    "--since",
    default=None,
    metavar="WHEN",
    help="Only events since WHEN: an ISO date/time (2026-01-31, "
    "2026-01-31T12:00:00Z) or a duration ago (30m, 1h, 7d, 2w).",
)
@click.option(
    "--event",
    type=click.Choice(list(AUDIT_EVENTS)),
    default=None,
    metavar="EVENT",
    help="Only this kind of event (one of those listed above).",
)
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the newest N events.")
@format_option
@database_option
@tracking_option
def audit_list(user, since, event, limit, fmt, database_uri, tracking_uri):
    """The help is built from ``store.audit.EVENTS`` (every kind of event, never a copy)."""
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
        records = [r.to_api() for r in found]  # the client's address as "address"
    show(records, fmt, _EVENT_COLUMNS, lambda r: [str(r[c] or "-") for c in _EVENT_COLUMNS])


_EVENT_COLUMNS = ["time", "event", "actor", "key_id", "username", "address", "detail"]
