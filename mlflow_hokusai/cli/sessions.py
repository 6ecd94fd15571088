"""``mlflow-hokusai sessions``: the browser sessions of people signed in through the OpenID
provider, listed and revoked in the key database or, online (``--tracking-uri``), through a
server's REST API with the caller's key (every server refuses a revoked session within a
second)."""

from __future__ import annotations

import click

from mlflow_hokusai.cli.options import (
    database_option,
    format_option,
    migrated_engine,
    note,
    open_backend,
    run,
    settings,
    show,
    tracking_option,
)


def _manager(database_uri):
    from mlflow_hokusai.auth.sessions import SessionManager
    from mlflow_hokusai.keys.audit import AuditLog
    from mlflow_hokusai.store.audit import AuditStore
    from mlflow_hokusai.store.sessions import SessionStore

    configured = settings()
    # Sessions are joined to MLflow's users (a deleted user's sessions show no admin flag).
    engine = migrated_engine(database_uri or configured.database_uri, mlflow_users=True)
    return SessionManager(
        SessionStore(engine),
        AuditLog(AuditStore(engine)),
        lifetime=configured.session_lifetime,
        idle_timeout=configured.session_idle_timeout,
    )


@click.group()
def sessions():
    """Browser sessions of people signed in with the organisation's identity provider."""


@sessions.command("list")
@click.option("--user", default=None, help="Only this user's sessions.")
@click.option("--all", "everything", is_flag=True, help="Also ended (revoked, expired) ones.")
@format_option
@database_option
@tracking_option
def list_sessions(user, everything, fmt, database_uri, tracking_uri):
    """List sessions, newest first (times in UTC); live ones unless --all. Online, an admin's
    key sees everyone's sessions, anyone else's key their own."""
    if tracking_uri:
        backend = open_backend(database_uri, tracking_uri)
        records = run(lambda: backend.client.list_sessions(user, include_ended=everything))
    else:
        manager = _manager(database_uri)
        records = [manager.describe(r) for r in manager.list(user, everything=everything)]
    show(records, fmt, _COLUMNS, lambda r: [str(r[c] or "-") for c in _COLUMNS])


@sessions.command("revoke")
@click.argument("session_id", required=False)
@click.option("--user", default=None, help="Revoke every session of this user.")
@database_option
@tracking_option
def revoke_sessions(session_id, user, database_uri, tracking_uri):
    """Revoke SESSION_ID, or every session of --user: the browser must sign in again.
    Online, with your own name as --user: "sign out everywhere"."""
    if (session_id is None) == (user is None):
        raise click.UsageError("give a SESSION_ID or --user, not both and not neither")
    if tracking_uri:
        backend = open_backend(database_uri, tracking_uri)
        ids = run(lambda: backend.client.revoke_sessions(session_id=session_id, username=user))
        revoked = [(revoked_id, user) for revoked_id in ids]  # the server names ids only
    else:
        revoked = [(r.id, r.username) for r in _revoke_offline(database_uri, session_id, user)]
    if session_id is not None and not revoked:
        raise click.ClickException(f"No live session {session_id!r}.")
    for revoked_id, username in revoked:
        note(f"Revoked session {revoked_id}" + (f" of {username!r}." if username else "."))
    if not revoked:
        note(f"{user!r} has no live session.")


def _revoke_offline(database_uri, session_id, user):
    from mlflow_hokusai.keys.management import Actor

    operator = Actor.operator()
    return _manager(database_uri).revoke(
        operator.name, operator.source, session_id=session_id, username=user
    )


_COLUMNS = ["id", "username", "status", "created_at", "last_seen_at", "expires_at", "source"]
