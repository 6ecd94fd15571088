"""The settings table (``config.SETTINGS``): the configuration page shows exactly what it
generates, every setting refuses a bad value by name, and its defaults are the ``Settings``
defaults. No server.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mlflow_hokusai.config import (
    SETTINGS,
    ConfigError,
    Settings,
    load_settings,
    settings_table_markdown,
)

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"

# A value each setting refuses (None: the setting takes any text).
BAD = {
    "database_uri": "",
    "admin_api_key": None,
    "admin_username": "",
    "admin_password": None,
    "bootstrap_dir": None,
    "url_prefix": "api/mlflow",
    "key_environment": "prod",
    "auth_cache_ttl_seconds": "2",
    "login_failure_limit": "often",
    "max_key_lifetime_days": "3651",
    "default_key_lifetime_days": "a week",
    "expire_unused_after_days": "0",
    "rotation_grace": "366d",
    "max_rotation_grace": "soon",
    "default_rate_limit": "1000/day",
    "rate_limit_storage": None,
    "rate_limit_unavailable": "maybe",
    "token_exchange_limit": "0/minute",
    "oidc_max_token_age": "59",
    "secret_scanning_keys_url": "api.github.com/meta/public_keys/secret_scanning",
    "secret_scanning_limit": "60/day",
    "trusted_proxies": "10.0.0.300",
    "oidc_issuer": "login.example.com",
    "oidc_client_id": None,
    "oidc_client_secret": None,
    "oidc_client_secret_file": None,
    "oidc_scopes": "profile email",
    "oidc_username_claim": "two words",
    "oidc_groups_claim": "",
    "oidc_allowed_groups": None,
    "oidc_admin_groups": None,
    "oidc_group_roles": "ml-team",
    "oidc_redirect_uri": "/hokusai/auth/callback",
    "oidc_post_logout_redirect_uri": "ftp://example.com/",
    "session_lifetime": "31d",
    "session_idle_timeout": "30s",
    "key_webhook_urls": "http://hooks.example.com/keys",
    "key_webhook_secret": None,
    "key_webhook_secret_file": None,
    "key_webhook_check_interval": "2d",
    "key_webhook_max_backoff": "0",
    "key_webhook_retry_for": "30s",
}
SPECS = {spec.name: spec for spec in SETTINGS}


def _doc_table() -> str:
    lines = DOC.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| setting |"))
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return "\n".join(lines[start:end]) + "\n"


def test_the_docs_table_is_the_generated_one():
    assert _doc_table() == settings_table_markdown()


def test_every_settings_field_has_one_spec():
    fields = {f.name for f in dataclasses.fields(Settings)} - {"mlflow_section", "hokusai_section"}
    assert [spec.name for spec in SETTINGS] == list(SPECS)  # no setting twice
    assert set(SPECS) == fields
    assert set(BAD) == fields


@pytest.mark.parametrize("spec", SETTINGS, ids=lambda spec: spec.name)
def test_defaults_are_the_settings_defaults(spec):
    assert spec.default == Settings.__dataclass_fields__[spec.name].default


@pytest.mark.parametrize("name", [name for name, value in BAD.items() if value is not None])
def test_a_bad_value_is_refused_by_name(name, tmp_path):
    spec = SPECS[name]
    with pytest.raises(ConfigError) as refused:
        load_settings({spec.env: BAD[name]})
    assert spec.env in str(refused.value) and name in str(refused.value)
    assert "from the environment" in str(refused.value)
    config = tmp_path / "hokusai.ini"
    config.write_text(f"[hokusai]\n{spec.ini} = {BAD[name]}\n")
    with pytest.raises(ConfigError, match=f"the {name} setting, from the config file"):
        load_settings({"HOKUSAI_CONFIG": str(config)})


def test_environment_wins_over_the_file_which_wins_over_defaults(tmp_path):
    config = tmp_path / "hokusai.ini"
    config.write_text(
        "[hokusai]\nkey_environment = test\nurl_prefix = /ml\n"
        "[mlflow]\ndefault_permission = NO_PERMISSIONS\n"
    )
    settings = load_settings({"HOKUSAI_CONFIG": str(config), "HOKUSAI_URL_PREFIX": "/env/"})
    assert (settings.key_environment, settings.url_prefix) == ("test", "/env")
    assert settings.admin_username == "admin"  # the packaged default
    assert settings.mlflow_section == {"default_permission": "NO_PERMISSIONS"}


def test_rules_between_settings_still_hold():
    with pytest.raises(ConfigError, match="must not exceed"):
        load_settings({"HOKUSAI_ROTATION_GRACE": "8d"})
    with pytest.raises(ConfigError, match="must not exceed"):
        load_settings(
            {"HOKUSAI_MAX_KEY_LIFETIME_DAYS": "7", "HOKUSAI_DEFAULT_KEY_LIFETIME_DAYS": "30"}
        )


def test_sign_in_settings_are_read_and_checked(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    settings = load_settings(
        {
            "HOKUSAI_OIDC_ISSUER": "https://login.example.com/realms/ml/",
            "HOKUSAI_OIDC_CLIENT_ID": "mlflow",
            "HOKUSAI_OIDC_CLIENT_SECRET_FILE": str(secret),
            "HOKUSAI_OIDC_ALLOWED_GROUPS": "ml team, ml-leads,",
            "HOKUSAI_OIDC_GROUP_ROLES": "ml team:trainers, ml-leads:reviewers",
            "HOKUSAI_SESSION_LIFETIME": "8h",
        }
    )
    assert settings.oidc_issuer == "https://login.example.com/realms/ml"
    assert settings.oidc_client_secret == "s3cret"
    assert "s3cret" not in repr(settings)
    assert settings.oidc_allowed_groups == ("ml team", "ml-leads")
    assert settings.oidc_group_roles == (("ml team", "trainers"), ("ml-leads", "reviewers"))
    assert (settings.session_lifetime, settings.session_idle_timeout) == (8 * 3600, 3600)
    with pytest.raises(ConfigError, match="oidc_client_secret .* is required"):
        load_settings({"HOKUSAI_OIDC_ISSUER": "https://x.example", "HOKUSAI_OIDC_CLIENT_ID": "a"})
    with pytest.raises(ConfigError, match="session_idle_timeout .* must not exceed"):
        load_settings({"HOKUSAI_SESSION_LIFETIME": "30m"})
    with pytest.raises(ConfigError, match="cannot be read"):
        load_settings({"HOKUSAI_OIDC_CLIENT_SECRET_FILE": str(tmp_path / "missing")})
