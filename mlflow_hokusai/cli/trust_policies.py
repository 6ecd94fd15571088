"""``mlflow-hokusai federation``: the trust policies of keyless CI, which say which workload
OIDC tokens may be exchanged for a short-lived key (admins; offline, or online with
``--tracking-uri``)."""

from __future__ import annotations

import json

import click

from mlflow_hokusai.cli.options import (
    allow_ip_option,
    database_option,
    duration,
    format_option,
    note,
    open_backend,
    rate_limit_option,
    run,
    scope_option,
    show,
    tracking_option,
)


@click.group()
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
@scope_option("The issued keys' scope.")
@click.option(
    "--lifetime",
    default=None,
    metavar="DURATION",
    callback=duration,
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
@rate_limit_option("The issued keys' rate limit (default: the server's default_rate_limit).")
@allow_ip_option("The issued keys work only from these addresses (repeat).")
@database_option
@tracking_option
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
    backend = open_backend(database_uri, tracking_uri)
    policy = run(
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
    note(
        f"Created federation policy {policy['id']}: tokens from {policy['issuer']} for "
        f"{policy['audience']!r} with subject {policy['subject']!r} get a "
        f"{policy['lifetime_seconds']} s {policy['scope']} key of {policy['username']!r}."
    )
    click.echo(policy["id"])


@federation.command("list")
@format_option
@database_option
@tracking_option
def federation_list(fmt, database_uri, tracking_uri):
    """List federation policies."""
    backend = open_backend(database_uri, tracking_uri)
    policies = run(backend.list_policies)
    columns = ["id", "issuer", "audience", "subject", "claims", "username", "scope", "lifetime"]
    show(policies, fmt, columns, _policy_row)


def _policy_row(p: dict) -> list[str]:
    return [
        p["id"],
        p["issuer"],
        p["audience"],
        p["subject"],
        ",".join(f"{k}={v}" for k, v in p["claims"].items()) or "-",
        p["username"],
        p["scope"],
        f"{p['lifetime_seconds']} s",
    ]


@federation.command("show")
@click.argument("policy_id")
@database_option
@tracking_option
def federation_show(policy_id, database_uri, tracking_uri):
    """Print one policy as JSON."""
    backend = open_backend(database_uri, tracking_uri)
    click.echo(json.dumps(run(lambda: backend.get_policy(policy_id)), indent=2))


@federation.command("delete")
@click.argument("policy_id")
@database_option
@tracking_option
def federation_delete(policy_id, database_uri, tracking_uri):
    """Delete POLICY_ID: its tokens are refused from the next exchange on. Keys it issued
    keep working until they expire (at most an hour); revoke them to end them now."""
    backend = open_backend(database_uri, tracking_uri)
    policy = run(lambda: backend.delete_policy(policy_id))
    note(f"Deleted federation policy {policy['id']} ({policy['subject']!r}).")
