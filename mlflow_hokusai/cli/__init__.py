"""``mlflow-hokusai``: manage API keys, the audit trail and the key database (click).

This package is the command line only: ``backends.py`` (where a command acts: the database or
a server's REST API) and ``times.py`` (parsing time options); rules live in ``keys/``.

Every command works directly on ``--database-uri`` (default: the configured database), so an
operator can create the first keys before the server ever starts; the ``keys`` commands also
have an online mode (``--tracking-uri``) that calls a server's REST API with the caller's own
key (``HOKUSAI_API_KEY`` or ``MLFLOW_TRACKING_TOKEN``). Commands that make a key
print the key ALONE on stdout; everything else goes to stderr, so
``KEY=$(mlflow-hokusai keys create --user alice)`` works.
"""

from __future__ import annotations

import json

import click
import sqlalchemy as sa

from mlflow_hokusai.config import ConfigError, load_settings, parse_duration
from mlflow_hokusai.keys.lifetime import lifetime_rules
from mlflow_hokusai.keys.management import (
    MAX_ALLOWED_IPS,
    MAX_EXPIRY_DAYS,
    parse_allowed_ips,
    parse_expiry,
    parse_key_rate_limit,
    parse_name,
    parse_username,
)
from mlflow_hokusai.store.audit import EVENTS as AUDIT_EVENTS
from mlflow_hokusai.store.keys import SCOPES
from mlflow_hokusai.text import printable


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
    """Migrate ours and MLflow's auth tables (keys are joined to MLflow's users), open ours."""
    from mlflow_hokusai import _mlflow
    from mlflow_hokusai.store.engine import get_engine, startup_lock, upgrade
    from mlflow_hokusai.store.keys import KeyStore

    uri = database_uri or _settings().database_uri
    engine = get_engine(uri)
    with startup_lock(engine):
        upgrade(engine)
        if not sa.inspect(engine).has_table("users"):
            _mlflow.user_store(uri)  # importing MLflow's auth engine costs seconds: only if needed
    return KeyStore(engine)


class _LazyUsers:
    """MLflow's user store, opened on first use (only ``keys create`` needs it)."""

    def __init__(self, uri: str):
        self._uri = uri
        self._store = None

    def __getattr__(self, name):
        if self._store is None:
            from mlflow_hokusai import _mlflow

            self._store = _mlflow.user_store(self._uri)
        return getattr(self._store, name)


def _note(message: str) -> None:
    click.echo(message, err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """Manage mlflow-hokusai API keys and its database."""


@cli.group()
def keys():
    """Create, list, revoke and rotate API keys."""


def _validated(parse):
    """A click callback running one of ``keys.management``'s validators (one implementation
    for the CLI and the REST API)."""

    def callback(ctx, param, value):
        from mlflow_hokusai.errors import HokusaiError

        try:
            return value if value is None else parse(value)
        except HokusaiError as e:
            raise click.BadParameter(e.message) from None

    return callback


def _limit_entries(ctx, param, values):
    """Check --experiment/--model entries the way the server will (one implementation)."""
    from mlflow_hokusai.errors import HokusaiError
    from mlflow_hokusai.keys.limits import parse_limits

    if not values:
        return values
    field = "experiments" if param.name == "experiments" else "registered_models"
    try:
        parse_limits(**{field: list(values)})
    except HokusaiError as e:
        raise click.BadParameter(e.message) from None
    return values


def _limit_options(func):
    options = [
        click.option(
            "--experiment",
            "experiments",
            multiple=True,
            metavar="ID|NAME[=PERMISSION]",
            callback=_limit_entries,
            help="Limit the key to this experiment, by id or name (repeat), with a permission "
            "ceiling READ, EDIT or MANAGE (default: the key's scope, MANAGE for write keys, READ "
            "for read keys; never more than the owner has). Its runs, metrics, artifacts, "
            "traces and logged models follow it. 'name:123' names an experiment called 123.",
        ),
        click.option(
            "--model",
            "models",
            multiple=True,
            metavar="NAME|PREFIX*[=PERMISSION]",
            callback=_limit_entries,
            help="Limit the key to this registered model, or the models whose names start "
            "with PREFIX (repeat), with a ceiling as for --experiment. Its versions, aliases "
            "and tags follow it.",
        ),
        click.option(
            "--workspace",
            default=None,
            metavar="NAME",
            help="With MLflow workspaces on: the only workspace the key may act in.",
        ),
        click.option(
            "--can-create",
            is_flag=True,
            help="Let the limited key create experiments and registered models; what it "
            "creates is added to its limits.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _tracking_option(func):
    return click.option(
        "--tracking-uri",
        default=None,
        metavar="URI",
        help="Online mode: call this server's REST API with the key in HOKUSAI_API_KEY (else "
        "MLFLOW_TRACKING_TOKEN), with that key's rights, instead of opening the database.",
    )(func)


def _backend(database_uri, tracking_uri):
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
    settings = _settings()
    uri = database_uri or settings.database_uri
    store = _open_store(uri)
    return backends.Offline(
        store,
        _LazyUsers(uri),
        settings.key_environment,
        _note,
        lifetime_rules(settings),
        settings.default_rate_limit,
    )


def _run(action):
    """Run ``action``; turn rule violations and server errors into a clean CLI error."""
    from mlflow.exceptions import MlflowException

    from mlflow_hokusai.errors import HokusaiError

    try:
        return action()
    except HokusaiError as e:
        raise click.ClickException(e.message) from None
    except MlflowException as e:
        raise click.ClickException(e.message) from None


@keys.command("create")
@click.option(
    "--user",
    "username",
    default=None,
    callback=_validated(parse_username),
    help="MLflow user who will own the key (offline: required; created, with an "
    "unusable random password, if missing. Online: default yourself; others' "
    "keys need an admin key).",
)
@click.option("--admin", is_flag=True, help="Make the user an MLflow admin (offline only).")
@click.option(
    "--scope",
    type=click.Choice(list(SCOPES)),
    default="write",
    show_default=True,
    help="'read' keys may only perform reads, whatever the user may do.",
)
@click.option(
    "--name", default="", callback=_validated(parse_name), help="A label to recognise the key by."
)
@click.option(
    "--expires-in-days",
    type=int,
    default=None,
    callback=_validated(parse_expiry),
    help=f"Expire the key after this many days (1-{MAX_EXPIRY_DAYS}; default: never, or the "
    "server's default_key_lifetime_days; at most its max_key_lifetime_days).",
)
@click.option(
    "--allow-ip",
    "allowed_ips",
    multiple=True,
    metavar="ADDRESS|CIDR",
    callback=_validated(parse_allowed_ips),
    help="Only accept the key from this IPv4/IPv6 address or CIDR range (repeat, up to "
    f"{MAX_ALLOWED_IPS}; default: from anywhere). Behind a proxy, see HOKUSAI_TRUSTED_PROXIES.",
)
@click.option(
    "--rate-limit",
    default=None,
    metavar="N/second|minute|hour",
    callback=_validated(parse_key_rate_limit),
    help="Accept at most N requests per second, minute or hour with this key, counted across "
    "every worker and replica; over it, 429 with Retry-After (default: the server's "
    "default_rate_limit, else none; 'none': no limit, for admins where a default exists).",
)
@_limit_options
@_database_option
@_tracking_option
def create_key(
    username,
    admin,
    scope,
    name,
    expires_in_days,
    allowed_ips,
    rate_limit,
    experiments,
    models,
    workspace,
    can_create,
    database_uri,
    tracking_uri,
):
    """Create a key and print it (alone) on stdout."""
    if tracking_uri and admin:
        raise click.UsageError("--admin works offline only (or use MLflow's users/update-admin)")
    if not tracking_uri and username is None:
        raise click.UsageError("offline, --user is required")
    backend = _backend(database_uri, tracking_uri)
    key, record = _run(
        lambda: backend.create(
            username=username,
            name=name,
            scope=scope,
            expires_in_days=expires_in_days,
            make_admin=admin,
            allowed_ips=list(allowed_ips) or None,
            rate_limit=rate_limit,
            experiments=list(experiments) or None,
            registered_models=list(models) or None,
            workspace=workspace,
            can_create=can_create or None,
        )
    )
    expiry = f", expires {record['expires_at']}" if record["expires_at"] else ""
    if record.get("allowed_ips"):
        expiry += f", only from {', '.join(record['allowed_ips'])}"
    if record.get("rate_limit"):
        expiry += f", at most {record['rate_limit']}"
    if record.get("limits"):
        expiry += f", limited to {_limits_text(record['limits'])}"
    _note(
        f"Created {record['scope']} key {record['id']} ({record['prefix']}…) "
        f"for {record['username']!r}{expiry}."
    )
    click.echo(key)


@keys.command("list")
@click.option(
    "--user",
    "username",
    default=None,
    callback=_validated(parse_username),
    help="Only this user's keys (online: yours unless an admin names another).",
)
@click.option(
    "--all",
    "everyone",
    is_flag=True,
    help="Online, admins: every user's keys (offline lists them all by default).",
)
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@_database_option
@_tracking_option
def list_keys(username, everyone, fmt, database_uri, tracking_uri):
    """List keys (never the keys themselves: id, prefix and metadata)."""
    if everyone and username:
        raise click.UsageError("use either --user NAME or --all, not both")
    backend = _backend(database_uri, tracking_uri)
    records = _run(lambda: backend.list(username=username, everyone=everyone))
    if fmt == "json":
        click.echo(json.dumps(records, indent=2))
        return
    columns = [
        "id",
        "prefix",
        "username",
        "name",
        "scope",
        "status",
        "created_at",
        "expires_at",
        "last_used_at",
        "allowed_ips",
        "rate_limit",
        "limits",
    ]
    _table(columns, [[_cell(r, c) for c in columns] for r in records])


def _limits_text(limits: dict | None) -> str:
    """A key's limits in one line (``experiments=12:EDIT models=ci-*:MANAGE can_create``)."""
    from mlflow_hokusai.keys.limits import from_json

    return from_json(json.dumps(limits)).summary() if limits else "none"


def _cell(record: dict, column: str) -> str:
    if column == "limits":
        return _limits_text(record.get("limits"))
    if column == "status" and record.get("status") == "rotating":
        return f"rotating until {record.get('rotation_ends_at')}"
    if column == "allowed_ips":
        return ",".join(record.get("allowed_ips") or []) or "any"
    if column == "rate_limit":
        return record.get("rate_limit") or "none"
    return str(record.get(column) or "-")


def _table(columns, rows):
    """Aligned columns; cells escaped (``text.printable``) so stored data cannot forge rows."""
    rows = [[printable(cell) for cell in row] for row in rows]
    widths = [max([len(c), *(len(row[i]) for row in rows)]) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


@keys.command("revoke")
@click.argument("key_id")
@_database_option
@_tracking_option
def revoke_key(key_id, database_uri, tracking_uri):
    """Revoke KEY_ID: every server refuses it within a second."""
    backend = _backend(database_uri, tracking_uri)
    record = _run(lambda: backend.revoke(key_id))
    _note(f"Revoked key {record['id']} ({record['prefix']}…) of {record['username']!r}.")


def _grace(ctx, param, value):
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@keys.command("update")
@click.argument("key_id")
@_limit_options
@click.option(
    "--no-experiments", is_flag=True, help="The key names no experiment (it touches none)."
)
@click.option("--no-models", is_flag=True, help="The key names no registered model.")
@click.option(
    "--no-can-create", is_flag=True, help="The key may no longer create experiments or models."
)
@click.option(
    "--unlimited", is_flag=True, help="Remove every resource and workspace limit from the key."
)
@_database_option
@_tracking_option
def update_key(
    key_id,
    experiments,
    models,
    workspace,
    can_create,
    no_experiments,
    no_models,
    no_can_create,
    unlimited,
    database_uri,
    tracking_uri,
):
    """Change KEY_ID's resource limits. Each option given replaces that part of the limits
    (--experiment/--model: the whole list); the others stay. Narrowing takes effect on every
    server within a second; widening never gives more than the key's owner may do."""
    if experiments and no_experiments or models and no_models or can_create and no_can_create:
        raise click.UsageError("an option and its --no- form contradict each other")
    given = {
        "experiments": [] if no_experiments else list(experiments) or None,
        "registered_models": [] if no_models else list(models) or None,
        "workspace": workspace,
        "can_create": False if no_can_create else (True if can_create else None),
    }
    if unlimited and any(value is not None for value in given.values()):
        raise click.UsageError("--unlimited removes every limit: give no other limit with it")
    if not unlimited and all(value is None for value in given.values()):
        raise click.UsageError("nothing to change: give a limit option, or --unlimited")
    backend = _backend(database_uri, tracking_uri)
    record = _run(lambda: backend.update_limits(key_id, unlimited=unlimited, **given))
    _note(
        f"Key {record['id']} ({record['prefix']}…) of {record['username']!r} is now limited "
        f"to: {_limits_text(record.get('limits'))}."
    )


@keys.command("rotate")
@click.argument("key_id")
@click.option(
    "--grace",
    default=None,
    metavar="DURATION",
    callback=_grace,
    help="Keep the old key working this long (e.g. 30m, 24h, 7d; 0 = end it now) so jobs "
    "still using it can move over. Default: the server's rotation_grace (0 unless set); at "
    "most its max_rotation_grace (7d unless set).",
)
@_database_option
@_tracking_option
def rotate_key(key_id, grace, database_uri, tracking_uri):
    """Print a new key (alone) replacing KEY_ID, with the same owner, name, scope and lifetime;
    KEY_ID stops working now, or when the --grace window ends."""
    backend = _backend(database_uri, tracking_uri)
    key, record, old = _run(lambda: backend.rotate(key_id, grace))
    until = old.get("rotation_ends_at")
    _note(
        f"Rotated key {old['id']} -> {record['id']} ({record['prefix']}…) "
        f"for {record['username']!r}"
        + (f"; {old['id']} keeps working until {until}." if until else f"; {old['id']} is revoked.")
    )
    click.echo(key)


@cli.group()
def federation():
    """Keyless CI: which workload OIDC tokens (GitHub Actions, GitLab CI, Kubernetes) may be
    exchanged for a short-lived key (admins; offline, or online with --tracking-uri)."""


def _claims(ctx, param, values):
    claims = {}
    for value in values:
        name, sep, required = value.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"{value!r} is not NAME=VALUE (e.g. repository_owner=org)")
        claims[name.strip()] = required
    return claims or None


@federation.command("create")
@click.option("--issuer", required=True, help="The issuer URL exactly as in the token's iss.")
@click.option("--audience", required=True, help="The audience the workload asks its token for.")
@click.option(
    "--subject",
    required=True,
    help="The token's sub, exact or a glob, e.g. 'repo:org/repo:ref:refs/heads/main' or "
    "'repo:org/*:ref:refs/heads/main', or 'system:serviceaccount:ns:name'. In a glob '*' is "
    "any run of characters but ':' and '?' one character but ':'.",
)
@click.option(
    "--user",
    "username",
    required=True,
    help="The MLflow user the workload acts as (created "
    "if missing, with an unusable random password).",
)
@click.option(
    "--scope",
    type=click.Choice(list(SCOPES)),
    default="write",
    show_default=True,
    help="The issued keys' scope.",
)
@click.option(
    "--lifetime",
    default=None,
    metavar="DURATION",
    callback=_grace,
    help="How long an issued key lives (e.g. 15m, 1h; 60 s to 1 h; default 15m). The client "
    "plugin exchanges again before it ends.",
)
@click.option(
    "--claim",
    "claims",
    multiple=True,
    metavar="NAME=VALUE",
    callback=_claims,
    help="Also require this claim value (repeat), e.g. repository_owner=org, environment=prod.",
)
@click.option(
    "--rate-limit",
    default=None,
    metavar="N/second|minute|hour",
    callback=_validated(parse_key_rate_limit),
    help="The issued keys' rate limit (default: the server's default_rate_limit).",
)
@click.option(
    "--allow-ip",
    "allowed_ips",
    multiple=True,
    metavar="ADDRESS|CIDR",
    callback=_validated(parse_allowed_ips),
    help="The issued keys work only from these addresses (repeat).",
)
@_database_option
@_tracking_option
def federation_create(
    issuer,
    audience,
    subject,
    username,
    scope,
    lifetime,
    claims,
    rate_limit,
    allowed_ips,
    database_uri,
    tracking_uri,
):
    """Create a policy and print its id (alone) on stdout."""
    backend = _backend(database_uri, tracking_uri)
    policy = _run(
        lambda: backend.create_policy(
            issuer=issuer,
            audience=audience,
            subject=subject,
            username=username,
            scope=scope,
            lifetime_seconds=lifetime,
            claims=claims,
            rate_limit=rate_limit,
            allowed_ips=list(allowed_ips) or None,
        )
    )
    _note(
        f"Created federation policy {policy['id']}: tokens from {policy['issuer']} for "
        f"{policy['audience']!r} with subject {policy['subject']!r} get a "
        f"{policy['lifetime_seconds']} s {policy['scope']} key of {policy['username']!r}."
    )
    click.echo(policy["id"])


@federation.command("list")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@_database_option
@_tracking_option
def federation_list(fmt, database_uri, tracking_uri):
    """List federation policies."""
    backend = _backend(database_uri, tracking_uri)
    policies = _run(backend.list_policies)
    if fmt == "json":
        click.echo(json.dumps(policies, indent=2))
        return
    columns = ["id", "issuer", "audience", "subject", "claims", "username", "scope", "lifetime"]
    rows = [
        [
            p["id"],
            p["issuer"],
            p["audience"],
            p["subject"],
            ",".join(f"{k}={v}" for k, v in p["claims"].items()) or "-",
            p["username"],
            p["scope"],
            f"{p['lifetime_seconds']} s",
        ]
        for p in policies
    ]
    _table(columns, rows)


@federation.command("show")
@click.argument("policy_id")
@_database_option
@_tracking_option
def federation_show(policy_id, database_uri, tracking_uri):
    """Print one policy as JSON."""
    backend = _backend(database_uri, tracking_uri)
    click.echo(json.dumps(_run(lambda: backend.get_policy(policy_id)), indent=2))


@federation.command("delete")
@click.argument("policy_id")
@_database_option
@_tracking_option
def federation_delete(policy_id, database_uri, tracking_uri):
    """Delete POLICY_ID: its tokens are refused from the next exchange on. Keys it issued
    keep working until they expire (at most an hour); revoke them to end them now."""
    backend = _backend(database_uri, tracking_uri)
    policy = _run(lambda: backend.delete_policy(policy_id))
    _note(f"Deleted federation policy {policy['id']} ({policy['subject']!r}).")


@cli.group()
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
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@_database_option
@_tracking_option
def audit_list(user, since, event, limit, fmt, database_uri, tracking_uri):
    """List audit events, oldest first (times in UTC). Online, an admin's key sees every
    event and anyone else's key the events about their own keys."""
    from mlflow_hokusai.keys.audit import parse_since

    try:
        since_at = parse_since(since) if since else None
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--since") from None
    if tracking_uri:
        backend = _backend(database_uri, tracking_uri)
        records = _run(
            lambda: backend.audit_events(user=user, since=since, event=event, limit=limit)
        )
    else:
        from mlflow_hokusai.store.audit import AuditStore
        from mlflow_hokusai.store.engine import get_engine, startup_lock, upgrade

        # Only our tables are needed: skip MLflow's auth store (a few seconds of imports).
        engine = get_engine(database_uri or _settings().database_uri)
        with startup_lock(engine):
            upgrade(engine)
        found = AuditStore(engine).list(user=user, since=since_at, event=event, limit=limit)
        records = [r.to_dict() for r in found]
    if fmt == "json":
        click.echo(json.dumps(records, indent=2))
        return
    columns = ["time", "event", "actor", "key_id", "username", "source", "detail"]
    _table(columns, [[str(r[c] or "-") for c in columns] for r in records])


@cli.group()
def db():
    """Database maintenance."""


@db.command("upgrade")
@_database_option
def db_upgrade(database_uri):
    """Apply mlflow-hokusai's and MLflow auth's migrations (idempotent; the server also does
    this at start-up)."""
    uri = database_uri or _settings().database_uri
    _open_store(uri)
    _note(f"Database {uri} is up to date.")
