"""``mlflow-hokusai``: manage API keys, the audit trail and the key database (click).

This package is the command line only; rules live in ``keys/``. One module per command group:
``keys.py`` (``keys``), ``trust_policies.py`` (``federation``: keyless CI's trust policies),
``audit.py`` (``audit``), ``sessions.py`` (``sessions``: browser sign-in sessions),
``webhooks.py`` (``webhooks``: key event webhooks) and ``db.py`` (``db``); ``options.py``
holds what they share (settings, common options, opening the database, errors, output) and
``backends.py`` where a command acts: the database or a server's REST API.

Every command works directly on ``--database-uri`` (default: the configured database), so an
operator can create the first keys before the server ever starts (after ``db upgrade``: no
other command creates a database, see ``options.existing_engine``); the ``keys``, ``federation``
and ``audit`` commands also have an online mode (``--tracking-uri``) that calls a server's REST
API with the caller's own key (``HOKUSAI_API_KEY`` or ``MLFLOW_TRACKING_TOKEN``). Commands that
make a key print the key ALONE on stdout; everything else goes to stderr, so
``KEY=$(mlflow-hokusai keys create --user alice)`` works.
"""

from __future__ import annotations

import warnings
from importlib import metadata

import click

import mlflow_hokusai
from mlflow_hokusai.cli import audit, db, keys, sessions, trust_policies, webhooks


class _Cli(click.Group):
    """The root group: third-party warnings (e.g. Starlette's deprecations, raised while
    MLflow is imported) stay out of the CLI's stderr; our own still show."""

    def main(self, *args, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            warnings.filterwarnings("default", module=r"mlflow_hokusai(\.|$)")
            return super().main(*args, **kwargs)


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    mlflow_hokusai.__version__,
    "--version",
    "-V",
    prog_name="mlflow-hokusai",
    message=f"%(prog)s %(version)s (MLflow {_version('mlflow')})",
)
def cli():
    """Manage mlflow-hokusai API keys and its database."""


cli.add_command(keys.keys)
cli.add_command(trust_policies.federation)
cli.add_command(audit.audit)
cli.add_command(sessions.sessions)
cli.add_command(webhooks.webhooks)
cli.add_command(db.db)
