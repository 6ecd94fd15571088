"""Settings: environment variables win over the ini file, which wins over packaged defaults.

The ini file (``HOKUSAI_CONFIG``) has a ``[hokusai]`` section for our settings and an optional
``[mlflow]`` section that is passed through to MLflow's auth engine (e.g. ``default_permission``).
"""

from __future__ import annotations

import configparser
import os
import re
from dataclasses import dataclass, field
from importlib import resources

DEFAULT_DATABASE_URI = "sqlite:///hokusai_auth.db"
DEFAULT_URL_PREFIX = "/api/mlflow"

# setting name -> environment variable
_ENV = {
    "database_uri": "HOKUSAI_DATABASE_URI",
    "admin_api_key": "HOKUSAI_ADMIN_API_KEY",
    "url_prefix": "HOKUSAI_URL_PREFIX",
    "key_environment": "HOKUSAI_KEY_ENVIRONMENT",
    "admin_username": "MLFLOW_AUTH_ADMIN_USERNAME",
    "admin_password": "MLFLOW_AUTH_ADMIN_PASSWORD",
    "auth_cache_ttl_seconds": "HOKUSAI_AUTH_CACHE_TTL_SECONDS",
    "bootstrap_dir": "HOKUSAI_BOOTSTRAP_DIR",
    "login_failure_limit": "HOKUSAI_LOGIN_FAILURE_LIMIT",
    "max_key_lifetime_days": "HOKUSAI_MAX_KEY_LIFETIME_DAYS",
    "default_key_lifetime_days": "HOKUSAI_DEFAULT_KEY_LIFETIME_DAYS",
    "expire_unused_after_days": "HOKUSAI_EXPIRE_UNUSED_AFTER_DAYS",
    "rotation_grace": "HOKUSAI_ROTATION_GRACE",
    "max_rotation_grace": "HOKUSAI_MAX_ROTATION_GRACE",
    "trusted_proxies": "HOKUSAI_TRUSTED_PROXIES",
    "default_rate_limit": "HOKUSAI_DEFAULT_RATE_LIMIT",
    "rate_limit_storage": "HOKUSAI_RATE_LIMIT_STORAGE",
    "rate_limit_unavailable": "HOKUSAI_RATE_LIMIT_UNAVAILABLE",
    "token_exchange_limit": "HOKUSAI_TOKEN_EXCHANGE_LIMIT",
    "oidc_max_token_age": "HOKUSAI_OIDC_MAX_TOKEN_AGE",
}
_LIFETIME_SETTINGS = (
    "max_key_lifetime_days",
    "default_key_lifetime_days",
    "expire_unused_after_days",
)
MAX_LIFETIME_DAYS = 3650
DEFAULT_MAX_ROTATION_GRACE = 7 * 86400  # seconds
DEFAULT_TOKEN_EXCHANGE_LIMIT = "30/minute"  # per client address


def check_lifetime_rules(
    max_days: int | None, default_days: int | None, unused_days: int | None
) -> None:
    """The lifetime rules' own constraints (each 1 to 3650 days or off; the default within the
    maximum): raises ValueError saying which is wrong. Used by ``load_settings`` and by
    ``keys.lifetime.LifetimeRules``."""
    for name, value in (
        ("max_key_lifetime_days", max_days),
        ("default_key_lifetime_days", default_days),
        ("expire_unused_after_days", unused_days),
    ):
        if value is not None and not 1 <= value <= MAX_LIFETIME_DAYS:
            raise ValueError(f"{name} must be between 1 and {MAX_LIFETIME_DAYS} days, not {value}")
    if max_days is not None and default_days is not None and default_days > max_days:
        raise ValueError(
            f"default_key_lifetime_days ({default_days}) must not exceed "
            f"max_key_lifetime_days ({max_days})"
        )


class ConfigError(ValueError):
    """A setting has a value we cannot use; the message says which and why."""


@dataclass(frozen=True)
class Settings:
    database_uri: str = DEFAULT_DATABASE_URI
    admin_api_key: str | None = None
    url_prefix: str = DEFAULT_URL_PREFIX
    key_environment: str = "live"
    admin_username: str = "admin"
    admin_password: str | None = None
    # How long a worker may reuse a key lookup. The design bounds staleness at 1 s.
    auth_cache_ttl_seconds: float = 1.0
    # Where the generated admin key/password files go (default: next to a SQLite DB, else cwd).
    bootstrap_dir: str | None = None
    # Failed password logins allowed per source address and per user name, per worker
    # ("N/second|minute|hour", a moving window) before they get 429.
    login_failure_limit: str = "10/minute"
    # Key lifetime rules (keys/lifetime.py), each a number of days or None (off).
    max_key_lifetime_days: int | None = None
    default_key_lifetime_days: int | None = None
    expire_unused_after_days: int | None = None
    # Rotation overlap, seconds: the default when a rotation names none, and the longest allowed.
    rotation_grace: int = 0
    max_rotation_grace: int = DEFAULT_MAX_ROTATION_GRACE
    # Proxies whose X-Forwarded-For names the client (CIDRs); none by default.
    trusted_proxies: tuple[str, ...] = ()
    # Key rate limits (auth/rate_limits.py): the limit given to new keys that name none
    # ("N/second|minute|hour", None: no default), where the counters live (None: the key
    # database; or a ``limits`` storage URI such as redis://host:6379/0), and what happens
    # when that store cannot be reached: "open" (serve, log a warning) or "closed" (503).
    default_rate_limit: str | None = None
    rate_limit_storage: str | None = None
    rate_limit_unavailable: str = "open"
    # Keyless CI (auth/federation.py): token exchanges allowed per source address, and the
    # oldest workload token (by its iat) accepted, seconds.
    token_exchange_limit: str = DEFAULT_TOKEN_EXCHANGE_LIMIT
    oidc_max_token_age: int = 3600
    # Passed through to MLflow's auth engine as its [mlflow] section.
    mlflow_section: dict = field(default_factory=dict)
    # The raw [hokusai] section, for settings owned by other modules (e.g. tag rules).
    hokusai_section: dict = field(default_factory=dict)


def _read_ini(path: str | None) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    default_text = resources.files("mlflow_hokusai").joinpath("default.ini").read_text()
    parser.read_string(default_text)
    if path:
        if not os.path.isfile(path):
            raise ConfigError(f"HOKUSAI_CONFIG points to {path!r}, which is not a file")
        parser.read(path)
    return parser


def _normalise_prefix(prefix: str) -> str:
    prefix = prefix.strip()
    if not prefix or prefix == "/":
        return ""
    if not prefix.startswith("/") or "//" in prefix or any(c in prefix for c in "?#%;\\"):
        raise ConfigError(
            f"HOKUSAI_URL_PREFIX must be a plain absolute path such as /api/mlflow, not {prefix!r}"
        )
    return prefix.rstrip("/")


def _rate(value: str, name: str) -> str:
    """A rate such as ``10/minute``, checked with the ``limits`` library that enforces it."""
    from limits import parse

    value = value.strip()
    try:
        item = parse(value)
    except ValueError:
        item = None
    if item is None or item.amount < 1:
        raise ConfigError(f"{name} must be a rate such as 10/minute, not {value!r}")
    return value


MAX_RATE = 1_000_000
_KEY_RATE = re.compile(r"(\d+)\s*/\s*(second|minute|hour)")


def parse_rate_limit(value) -> str:
    """A key's rate limit: ``N/second``, ``N/minute`` or ``N/hour`` with N from 1 to
    1,000,000 -> its normal form (``1000/hour``). Raises ValueError saying what is expected."""
    match = _KEY_RATE.fullmatch(value.strip().lower()) if isinstance(value, str) else None
    if match is None or not 1 <= int(match.group(1)) <= MAX_RATE:
        raise ValueError(
            f"must be a number of requests from 1 to {MAX_RATE:,} per second, minute or hour, "
            f"such as 1000/hour, not {value!r}"
        )
    return f"{int(match.group(1))}/{match.group(2)}"


def _days(value: str, name: str) -> int | None:
    """A whole number of days (1 to 3650), or None for an empty value (the rule is off)."""
    value = value.strip()
    if not value:
        return None
    env_name = _ENV[name]
    try:
        days = int(value)
    except ValueError:
        days = 0
    if not 1 <= days <= MAX_LIFETIME_DAYS:
        raise ConfigError(
            f"{name} ({env_name}) must be a whole number of days from 1 to "
            f"{MAX_LIFETIME_DAYS}, or empty for no rule, not {value!r}"
        )
    return days


_DURATION = re.compile(r"(\d+)\s*([smhdw]?)")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_ROTATION_GRACE_SECONDS = 365 * 86400


def parse_duration(value: str) -> int:
    """``90``, ``30s``, ``15m``, ``24h``, ``7d``, ``2w`` -> seconds. Raises ValueError."""
    match = _DURATION.fullmatch(str(value).strip().lower())
    if match is None:
        raise ValueError(
            f"{value!r} is not a duration such as 0, 3600, 30m, 24h or 7d (s, m, h, d, w)"
        )
    return int(match.group(1)) * _SECONDS[match.group(2)]


def _duration(value: str, name: str) -> int:
    try:
        seconds = parse_duration(value)
    except ValueError as e:
        raise ConfigError(f"{name} ({_ENV[name]}): {e}") from None
    if seconds > MAX_ROTATION_GRACE_SECONDS:
        raise ConfigError(f"{name} ({_ENV[name]}) must be at most 365 days, not {value!r}")
    return seconds


def _networks(value: str, name: str) -> tuple[str, ...]:
    """Comma- or space-separated IPv4/IPv6 addresses or CIDR ranges."""
    import ipaddress

    networks = []
    for entry in re.split(r"[,\s]+", value.strip()):
        if not entry:
            continue
        try:
            networks.append(str(ipaddress.ip_network(entry, strict=False)))
        except ValueError:
            raise ConfigError(
                f"{name} ({_ENV[name]}): {entry!r} is not an IP address or CIDR range"
            ) from None
    return tuple(networks)


def load_settings(environ: dict | None = None) -> Settings:
    environ = os.environ if environ is None else environ
    parser = _read_ini(environ.get("HOKUSAI_CONFIG"))
    section = dict(parser["hokusai"]) if parser.has_section("hokusai") else {}
    values: dict = {}
    for name, env_name in _ENV.items():
        if env_name in environ:
            values[name] = environ[env_name]
        elif name in section:
            values[name] = section[name]
    if "url_prefix" in values:
        values["url_prefix"] = _normalise_prefix(values["url_prefix"])
    if values.get("key_environment", "live") not in ("live", "test"):
        raise ConfigError("HOKUSAI_KEY_ENVIRONMENT must be 'live' or 'test'")
    if "auth_cache_ttl_seconds" in values:
        try:
            ttl = float(values["auth_cache_ttl_seconds"])
        except ValueError:
            ttl = -1.0
        if not 0 <= ttl <= 1:
            raise ConfigError("HOKUSAI_AUTH_CACHE_TTL_SECONDS must be a number between 0 and 1")
        values["auth_cache_ttl_seconds"] = ttl
    if "login_failure_limit" in values:
        values["login_failure_limit"] = _rate(
            values["login_failure_limit"], "HOKUSAI_LOGIN_FAILURE_LIMIT"
        )
    for name in _LIFETIME_SETTINGS:
        if name in values:
            values[name] = _days(values[name], name)
    try:
        check_lifetime_rules(*(values.get(name) for name in _LIFETIME_SETTINGS))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    for name in ("rotation_grace", "max_rotation_grace"):
        if name in values:
            values[name] = _duration(values[name], name)
    grace = values.get("rotation_grace", 0)
    if grace > values.get("max_rotation_grace", Settings.max_rotation_grace):
        raise ConfigError("rotation_grace must not exceed max_rotation_grace")
    if values.get("default_rate_limit", "").strip():
        try:
            values["default_rate_limit"] = parse_rate_limit(values["default_rate_limit"])
        except ValueError as e:
            raise ConfigError(f"default_rate_limit (HOKUSAI_DEFAULT_RATE_LIMIT) {e}") from None
    else:
        values["default_rate_limit"] = None
    values["rate_limit_storage"] = values.get("rate_limit_storage", "").strip() or None
    unavailable = values.get("rate_limit_unavailable", "open").strip().lower() or "open"
    if unavailable not in ("open", "closed"):
        raise ConfigError(
            "rate_limit_unavailable (HOKUSAI_RATE_LIMIT_UNAVAILABLE) must be 'open' (serve "
            f"requests and log a warning) or 'closed' (answer 503), not {unavailable!r}"
        )
    values["rate_limit_unavailable"] = unavailable
    if "token_exchange_limit" in values:
        try:
            values["token_exchange_limit"] = parse_rate_limit(values["token_exchange_limit"])
        except ValueError as e:
            raise ConfigError(f"token_exchange_limit (HOKUSAI_TOKEN_EXCHANGE_LIMIT) {e}") from None
    if "oidc_max_token_age" in values:
        try:
            age = parse_duration(values["oidc_max_token_age"])
        except ValueError as e:
            raise ConfigError(f"oidc_max_token_age (HOKUSAI_OIDC_MAX_TOKEN_AGE): {e}") from None
        if not 60 <= age <= 86400:
            raise ConfigError(
                "oidc_max_token_age (HOKUSAI_OIDC_MAX_TOKEN_AGE) must be from 60 s to 24 h, not "
                f"{values['oidc_max_token_age']!r}"
            )
        values["oidc_max_token_age"] = age
    if "trusted_proxies" in values:
        values["trusted_proxies"] = _networks(values["trusted_proxies"], "trusted_proxies")
    for optional in ("admin_api_key", "admin_password", "bootstrap_dir"):
        if optional in values and not values[optional]:
            values[optional] = None
    if not values.get("admin_username", "admin"):
        raise ConfigError("the admin username must not be empty")
    if not values.get("database_uri", DEFAULT_DATABASE_URI):
        raise ConfigError("HOKUSAI_DATABASE_URI must not be empty")
    mlflow_section = dict(parser["mlflow"]) if parser.has_section("mlflow") else {}
    return Settings(**values, mlflow_section=mlflow_section, hokusai_section=section)
