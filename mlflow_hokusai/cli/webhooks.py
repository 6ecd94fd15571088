"""``mlflow-hokusai webhooks``: the key event webhooks (settings ``key_webhook_urls`` and
``key_webhook_secret``), tested from the command line."""

from __future__ import annotations

import sys

import click

from mlflow_hokusai.cli.options import note, settings

_NONE_CONFIGURED = (
    "No key webhook is configured: set HOKUSAI_KEY_WEBHOOK_URLS (or key_webhook_urls in the "
    "[hokusai] section of the HOKUSAI_CONFIG file) to one or more https URLs, and "
    "HOKUSAI_KEY_WEBHOOK_SECRET (or HOKUSAI_KEY_WEBHOOK_SECRET_FILE) to the secret they share "
    "with the server."
)


@click.group()
def webhooks():
    """Key event webhooks: the server POSTs created, rotated, revoked, expiring and dormant
    key events, signed as MLflow signs its webhooks, to every URL in key_webhook_urls."""


@webhooks.command(
    "test",
    short_help="Send a signed ping to every configured webhook URL.",
    help="Send a signed 'ping' event to every URL in key_webhook_urls "
    "(HOKUSAI_KEY_WEBHOOK_URLS), signed with key_webhook_secret exactly as the server signs "
    "key events (X-MLflow-Signature, X-MLflow-Timestamp, X-MLflow-Delivery-Id), and print "
    "each receiver's answer: its HTTP status, or why it could not be reached. Reads the same "
    "settings as the server (environment, then the HOKUSAI_CONFIG file); needs no database. "
    "Exits with 1 unless every receiver answers 2xx.",
)
def test_webhooks():
    import requests

    from mlflow_hokusai.keys.webhooks import ping_row, post, shown_url

    configured = settings()
    if not configured.key_webhook_urls:
        raise click.ClickException(_NONE_CONFIGURED)
    row = ping_row()
    note(f"Sending ping {row.delivery_id} to {len(configured.key_webhook_urls)} URL(s).")
    failed = 0
    with requests.Session() as session:
        for url in configured.key_webhook_urls:
            answer = post(session, url, configured.key_webhook_secret, row)
            failed += not answer.ok
            click.echo(f"{shown_url(url)}  {answer}{'' if answer.ok else '  (failed)'}")
    if failed:
        note(f"{failed} of {len(configured.key_webhook_urls)} receiver(s) did not answer 2xx.")
        sys.exit(1)
