"""``mlflow-hokusai keys``: create, list, update, revoke and rotate API keys, offline (the
database) or online (``--tracking-uri``, a server's REST API with the caller's own key)."""

from __future__ import annotations

import json

import click

from mlflow_hokusai.cli.options import (
    allow_ip_option,
    database_option,
    duration,
    format_option,
    in_flags,
    note,
    open_backend,
    rate_limit_option,
    run,
    scope_option,
    show,
    tracking_option,
    user_option,
    validated,
)
from mlflow_hokusai.keys.management import (
    MAX_ALLOWED_IPS,
    MAX_EXPIRY_DAYS,
    NO_RATE_LIMIT,
    parse_expiry,
    parse_name,
)


@click.group()
def keys():
    """Create, list, revoke and rotate API keys."""


def _limit_entries(ctx, param, values):
    """Check --experiment/--model entries the way the server will (one implementation)."""
    from mlflow_hokusai.errors import HokusaiError
    from mlflow_hokusai.keys.resource_limits import parse_limits

    if not values:
        return values
    field = "experiments" if param.name == "experiments" else "registered_models"
    try:
        parse_limits(**{field: list(values)})
    except HokusaiError as e:
        raise click.UsageError(in_flags(e.message, param.opts[0]), ctx) from None
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


@keys.command("create")
@user_option(
    "MLflow user who will own the key (offline: required; created, with an "
    "unusable random password, if missing. Online: default yourself; others' "
    "keys need an admin key)."
)
@click.option("--admin", is_flag=True, help="Make the user an MLflow admin (offline only).")
@scope_option("'read' keys may only perform reads, whatever the user may do.")
@click.option(
    "--name", default="", callback=validated(parse_name), help="A label to recognise the key by."
)
@click.option(
    "--expires-in-days",
    type=int,
    default=None,
    callback=validated(parse_expiry),
    help=f"Expire the key after this many days (1-{MAX_EXPIRY_DAYS}; default: never, or the "
    "server's default_key_lifetime_days; at most its max_key_lifetime_days).",
)
@allow_ip_option(
    "Only accept the key from this IPv4/IPv6 address or CIDR range (repeat, up to "
    f"{MAX_ALLOWED_IPS}; default: from anywhere). Behind a proxy, see HOKUSAI_TRUSTED_PROXIES."
)
@rate_limit_option(
    "Accept at most N requests per second, minute or hour with this key, counted across "
    "every worker and replica; over it, 429 with Retry-After (default: the server's "
    "default_rate_limit, else none; 'unlimited': no limit, for admins where a default exists)."
)
@_limit_options
@database_option
@tracking_option
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
    backend = open_backend(database_uri, tracking_uri)
    key, record = run(
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
    note(
        f"Created {record['scope']} key {record['id']} ({record['prefix']}…) "
        f"for {record['username']!r}{_conditions(record)}, in {backend.where}."
    )
    click.echo(key)


def _conditions(record: dict) -> str:
    """What a new key is bound by, for the note (``, expires …, only from …``)."""
    text = f", expires {record['expires_at']}" if record["expires_at"] else ""
    if record.get("allowed_ips"):
        text += f", only from {', '.join(record['allowed_ips'])}"
    if record.get("rate_limit") == NO_RATE_LIMIT:
        text += ", no rate limit"
    elif record.get("rate_limit"):
        text += f", at most {record['rate_limit']}"
    if record.get("limits"):
        text += f", limited to {_limits_text(record['limits'])}"
    return text


@keys.command("list")
@user_option("Only this user's keys (online: yours unless an admin names another).")
@click.option(
    "--all",
    "everyone",
    is_flag=True,
    help="Online, admins: every user's keys (offline lists them all by default).",
)
@format_option
@database_option
@tracking_option
def list_keys(username, everyone, fmt, database_uri, tracking_uri):
    """List keys (never the keys themselves: id, prefix and metadata)."""
    if everyone and username:
        raise click.UsageError("use either --user NAME or --all, not both")
    backend = open_backend(database_uri, tracking_uri)
    records = run(lambda: backend.list(username=username, everyone=everyone))
    show(records, fmt, _KEY_COLUMNS, lambda record: [_cell(record, c) for c in _KEY_COLUMNS])


_KEY_COLUMNS = [
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


def _limits_text(limits: dict | None) -> str:
    """A key's limits in one line (``experiments=12:EDIT models=ci-*:MANAGE can_create``):
    ``all`` when it has none ("none" is only ever nothing, as in ``models=none``)."""
    from mlflow_hokusai.keys.resource_limits import from_json

    return (from_json(json.dumps(limits)).summary() if limits else "") or "all"


def _cell(record: dict, column: str) -> str:
    if column == "limits":
        return _limits_text(record.get("limits"))
    if column == "status" and record.get("status") == "rotating":
        return f"rotating until {record.get('rotation_ends_at')}"
    if column == "allowed_ips":
        return ",".join(record.get("allowed_ips") or []) or "any"
    if column == "rate_limit":
        rate = record.get("rate_limit")
        return "unlimited" if rate in (None, "", NO_RATE_LIMIT) else rate
    return str(record.get(column) or "-")


@keys.command("revoke")
@click.argument("key_id")
@database_option
@tracking_option
def revoke_key(key_id, database_uri, tracking_uri):
    """Revoke KEY_ID (its id, as 'keys list' shows it; or the key itself): every server
    refuses it within a second."""
    backend = open_backend(database_uri, tracking_uri)
    record = run(lambda: backend.revoke(key_id))
    note(f"Revoked key {record['id']} ({record['prefix']}…) of {record['username']!r}.")


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
@database_option
@tracking_option
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
    backend = open_backend(database_uri, tracking_uri)
    record = run(lambda: backend.update_limits(key_id, unlimited=unlimited, **given))
    who = f"Key {record['id']} ({record['prefix']}…) of {record['username']!r}"
    if record.get("limits"):
        note(f"{who} is now limited to: {_limits_text(record['limits'])}.")
    else:
        note(f"{who} now has no resource limits: all that {record['username']!r} may do.")


@keys.command("rotate")
@click.argument("key_id")
@click.option(
    "--grace",
    default=None,
    metavar="DURATION",
    callback=duration,
    help="Keep the old key working this long (e.g. 30m, 24h, 7d; 0 = end it now) so jobs "
    "still using it can move over. Default: the server's rotation_grace (0 unless set); at "
    "most its max_rotation_grace (7d unless set).",
)
@database_option
@tracking_option
def rotate_key(key_id, grace, database_uri, tracking_uri):
    """Print a new key (alone) replacing KEY_ID, with the same owner, name, scope and lifetime;
    KEY_ID stops working now, or when the --grace window ends."""
    backend = open_backend(database_uri, tracking_uri)
    key, record, old = run(lambda: backend.rotate(key_id, grace))
    until = old.get("rotation_ends_at")
    note(
        f"Rotated key {old['id']} -> {record['id']} ({record['prefix']}…) "
        f"for {record['username']!r} in {backend.where}"
        + (f"; {old['id']} keeps working until {until}." if until else f"; {old['id']} is revoked.")
    )
    click.echo(key)
