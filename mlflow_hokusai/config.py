"""Settings: environment variables win over the ini file, which wins over packaged defaults.

The ini file (``HOKUSAI_CONFIG``) has a ``[hokusai]`` section for our settings and an optional
``[mlflow]`` section that is passed through to MLflow's auth engine (e.g. ``default_permission``).

Each setting is one ``SettingSpec`` in ``SETTINGS``: its variable, its parser and bounds, its
default and its line in ``docs/configuration.md`` (``settings_table_markdown``). ``load_settings``
walks that table, then checks the rules between settings (``_CROSS_CHECKS``).
"""

from __future__ import annotations

import configparser
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources

DEFAULT_DATABASE_URI = "sqlite:///hokusai_auth.db"
DEFAULT_URL_PREFIX = "/api/mlflow"

MAX_LIFETIME_DAYS = 3650
DEFAULT_MAX_ROTATION_GRACE = 7 * 86400  # seconds
DEFAULT_TOKEN_EXCHANGE_LIMIT = "30/minute"  # per client address
# GitHub's secret scanning partner program: the keys its reports are signed with.
DEFAULT_SECRET_SCANNING_KEYS_URL = "https://api.github.com/meta/public_keys/secret_scanning"
DEFAULT_SECRET_SCANNING_LIMIT = "60/minute"  # reports per client address
DEFAULT_OIDC_SCOPES = "openid profile email"
DEFAULT_SESSION_LIFETIME = 12 * 3600  # seconds
DEFAULT_SESSION_IDLE_TIMEOUT = 3600  # seconds
DEFAULT_KEY_WEBHOOK_CHECK_INTERVAL = 15 * 60  # seconds
DEFAULT_KEY_WEBHOOK_MAX_BACKOFF = 10 * 60  # seconds
DEFAULT_KEY_WEBHOOK_RETRY_FOR = 3 * 86400  # seconds
MAX_KEY_WEBHOOK_URLS = 10
MIN_KEY_WEBHOOK_SECRET = 16  # characters


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
    # Keyless CI (auth/token_exchange.py): token exchanges allowed per source address, and the
    # oldest workload token (by its iat) accepted, seconds.
    token_exchange_limit: str = DEFAULT_TOKEN_EXCHANGE_LIMIT
    oidc_max_token_age: int = 3600
    # Leaked keys (auth/secret_scanning.py): where the reports' signing keys are published,
    # and reports allowed per source address.
    secret_scanning_keys_url: str = DEFAULT_SECRET_SCANNING_KEYS_URL
    secret_scanning_limit: str = DEFAULT_SECRET_SCANNING_LIMIT
    # Sign-in with the organisation's OpenID provider (auth/sign_in.py); off without an issuer.
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    # Never logged (kept out of repr); or read from oidc_client_secret_file.
    oidc_client_secret: str | None = field(default=None, repr=False)
    oidc_client_secret_file: str | None = None
    oidc_scopes: str = DEFAULT_OIDC_SCOPES
    oidc_username_claim: str = "preferred_username"
    oidc_groups_claim: str = "groups"
    oidc_allowed_groups: tuple[str, ...] = ()
    oidc_admin_groups: tuple[str, ...] = ()
    oidc_group_roles: tuple[tuple[str, str], ...] = ()  # (group, MLflow role name)
    oidc_redirect_uri: str | None = None
    oidc_post_logout_redirect_uri: str | None = None
    # Browser sessions, seconds: the longest life of one, and how long one may sit unused.
    session_lifetime: int = DEFAULT_SESSION_LIFETIME
    session_idle_timeout: int = DEFAULT_SESSION_IDLE_TIMEOUT
    # Key event webhooks (keys/webhooks.py): where events go (none: off), the HMAC secret
    # they are signed with (never logged; or read from key_webhook_secret_file), and seconds:
    # how often expiring and dormant keys are looked for, the longest wait between retries
    # to a failing receiver, and how long one event is retried before it is given up.
    key_webhook_urls: tuple[str, ...] = ()
    key_webhook_secret: str | None = field(default=None, repr=False)
    key_webhook_secret_file: str | None = None
    key_webhook_check_interval: int = DEFAULT_KEY_WEBHOOK_CHECK_INTERVAL
    key_webhook_max_backoff: int = DEFAULT_KEY_WEBHOOK_MAX_BACKOFF
    key_webhook_retry_for: int = DEFAULT_KEY_WEBHOOK_RETRY_FOR
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


# -- value parsers: raw text -> value, or ValueError -------------------------------------------
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


class _Fault(ValueError):
    """A value's own fault, said after the setting's rule (a plain ValueError says only the
    rule and the value)."""


def _or_none(value: str) -> str | None:
    """Any text; empty means unset."""
    return value or None


def _stripped_or_none(value: str) -> str | None:
    return value.strip() or None


def _required(value: str) -> str:
    if not value:
        raise ValueError
    return value


def _url_prefix(value: str) -> str:
    prefix = value.strip()
    if not prefix or prefix == "/":
        return ""
    if not prefix.startswith("/") or "//" in prefix or any(c in prefix for c in "?#%;\\"):
        raise ValueError
    return prefix.rstrip("/")


def _key_environment(value: str) -> str:
    if value not in ("live", "test"):
        raise ValueError
    return value


def _login_rate(value: str) -> str:
    """A rate such as ``10/minute``, checked with the ``limits`` library that enforces it."""
    from limits import parse

    value = value.strip()
    item = parse(value)  # ValueError if it is not a rate
    if item is None or item.amount < 1:
        raise ValueError
    return value


def _days(value: str) -> int | None:
    """A whole number of days, or None for an empty value (the rule is off)."""
    return int(value) if value.strip() else None


def _duration(value: str) -> int:
    try:
        return parse_duration(value)
    except ValueError as e:
        raise _Fault(str(e)) from None


def _key_rate_or_none(value: str) -> str | None:
    return parse_rate_limit(value) if value.strip() else None


def _when_unavailable(value: str) -> str:
    word = value.strip().lower() or "open"
    if word not in ("open", "closed"):
        raise ValueError
    return word


def _networks(value: str) -> tuple[str, ...]:
    """Comma- or space-separated IPv4/IPv6 addresses or CIDR ranges."""
    import ipaddress

    networks = []
    for entry in re.split(r"[,\s]+", value.strip()):
        if not entry:
            continue
        try:
            networks.append(str(ipaddress.ip_network(entry, strict=False)))
        except ValueError:
            raise _Fault(f"{entry!r} is not an IP address or CIDR range") from None
    return tuple(networks)


def _http_url_or_none(value: str) -> str | None:
    """An absolute http(s) URL without a query or fragment, or None for an empty value."""
    from urllib.parse import urlsplit

    value = value.strip()
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError
    return value


def _http_url(value: str) -> str:
    url = _http_url_or_none(value)
    if url is None:
        raise ValueError
    return url


def _issuer(value: str) -> str | None:
    url = _http_url_or_none(value)
    return url.rstrip("/") if url else None


_LOOPBACK_NAMES = ("localhost", "localhost.")


def is_loopback_host(host: str) -> bool:
    """``localhost``, ``127.0.0.0/8`` or ``::1``: a host http may be used to."""
    import ipaddress

    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _webhook_urls(value: str) -> tuple[str, ...]:
    """Comma- (or space-) separated receiver URLs: https, or http to a loopback host only
    (key events must not cross a network in clear text); no fragment, at most 10."""
    from urllib.parse import urlsplit

    urls = tuple(dict.fromkeys(u for u in re.split(r"[,\s]+", value.strip()) if u))
    if len(urls) > MAX_KEY_WEBHOOK_URLS:
        raise _Fault(f"{len(urls)} URLs given, at most {MAX_KEY_WEBHOOK_URLS}")
    for url in urls:
        try:
            parts = urlsplit(url)
            host, _port = parts.hostname, parts.port  # a bad port raises ValueError
        except ValueError:
            host, parts = None, None
        if parts is None or parts.scheme not in ("http", "https") or not host:
            raise _Fault(f"{url!r} is not an absolute http(s) URL")
        if parts.fragment:
            raise _Fault(f"{url!r} has a fragment (#…), which is never sent")
        if parts.scheme == "http" and not is_loopback_host(host):
            raise _Fault(
                f"{url!r} uses http to {host}, which is not this machine: use https (http is "
                "allowed only to localhost, 127.0.0.1 or ::1)"
            )
    return urls


def _names(value: str) -> tuple[str, ...]:
    """Comma-separated names (group names may hold spaces, so only commas separate)."""
    return tuple(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))


def _scopes(value: str) -> str:
    scopes = value.replace(",", " ").split()
    if "openid" not in scopes:
        raise ValueError
    return " ".join(dict.fromkeys(scopes))


def _claim(value: str) -> str:
    value = value.strip()
    if not value or any(c.isspace() for c in value):
        raise ValueError
    return value


def _group_roles(value: str) -> tuple[tuple[str, str], ...]:
    """``ml-team:trainers, ml-leads:reviewers`` -> ((group, role), ...)."""
    pairs = []
    for entry in value.split(","):
        if not entry.strip():
            continue
        group, sep, role = entry.rpartition(":")
        if not sep or not group.strip() or not role.strip():
            raise _Fault(f"{entry.strip()!r} is not group:role")
        pairs.append((group.strip(), role.strip()))
    return tuple(dict.fromkeys(pairs))


# -- the settings ------------------------------------------------------------------------------
@dataclass(frozen=True)
class SettingSpec:
    """One setting: where it is read from, how it is parsed and checked, what a refusal says
    and how ``docs/configuration.md`` describes it."""

    name: str  # the Settings field
    env: str  # its environment variable
    parse: Callable[[str], object]  # raw text -> value; ValueError when unusable
    default: object  # when neither the environment nor the config file sets it
    description: str  # one line: the docs table's first column (Markdown)
    rule: str = "any text"  # what a good value is: "<env> must be <rule>, not <value>"
    bounds: tuple[float, float] | None = None  # inclusive range of a parsed value (None passes)
    ini: str = ""  # its key in the config file's [hokusai] section (default: the name)
    shown_default: str | None = None  # the docs' default column (default: `default`)

    def __post_init__(self):
        if not self.ini:
            object.__setattr__(self, "ini", self.name)

    def read(self, raw: str, source: str):
        """``raw`` (from ``source``: the environment or the config file) -> the value, or a
        ConfigError naming the setting, its variable and the rule."""
        try:
            value = self.parse(raw)
            if self.bounds and value is not None and not self.bounds[0] <= value <= self.bounds[1]:
                raise ValueError
        except _Fault as e:
            raise ConfigError(
                f"{self.env} must be {self.rule} (the {self.name} setting, from {source}): {e}"
            ) from None
        except ValueError:
            raise ConfigError(
                f"{self.env} must be {self.rule}, not {raw!r} (the {self.name} setting, "
                f"from {source})"
            ) from None
        return value

    def doc_row(self) -> tuple[str, str, str, str]:
        if self.shown_default is not None:
            default = self.shown_default
        elif self.default in (None, ()):
            default = "none"
        else:
            default = f"`{self.default}`"
        return self.description, self.env, self.ini, default


_DAYS_RULE = f"a whole number of days from 1 to {MAX_LIFETIME_DAYS}, or empty for no rule"
_GRACE_RULE = "a duration from 0 to 365 days such as 0, 3600, 30m, 24h or 7d"
_KEY_RATE_RULE = f"a number of requests from 1 to {MAX_RATE:,} per second, minute or hour"

SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec(
        "database_uri",
        "HOKUSAI_DATABASE_URI",
        _required,
        DEFAULT_DATABASE_URI,
        "key + auth database",
        rule="a database URI (not empty)",
    ),
    SettingSpec(
        "admin_api_key",
        "HOKUSAI_ADMIN_API_KEY",
        _or_none,
        None,
        "bootstrap admin key",
        shown_default="generated on first start into `hokusai_admin_key`",
    ),
    SettingSpec(
        "admin_username",
        "MLFLOW_AUTH_ADMIN_USERNAME",
        _required,
        "admin",
        "admin username",
        rule="a user name (not empty)",
    ),
    SettingSpec(
        "admin_password",
        "MLFLOW_AUTH_ADMIN_PASSWORD",
        _or_none,
        None,
        "admin password (first start only)",
        shown_default="generated into `hokusai_admin_password`",
    ),
    SettingSpec(
        "bootstrap_dir",
        "HOKUSAI_BOOTSTRAP_DIR",
        _or_none,
        None,
        "where generated files go",
        shown_default="next to a SQLite key database, else the working directory",
    ),
    SettingSpec(
        "url_prefix",
        "HOKUSAI_URL_PREFIX",
        _url_prefix,
        DEFAULT_URL_PREFIX,
        "URL prefix served besides `/`",
        rule="a plain absolute path such as /api/mlflow, or empty for none",
        shown_default="`/api/mlflow` (empty = off)",
    ),
    SettingSpec(
        "key_environment",
        "HOKUSAI_KEY_ENVIRONMENT",
        _key_environment,
        "live",
        "environment word in new keys",
        rule="'live' or 'test'",
    ),
    SettingSpec(
        "auth_cache_ttl_seconds",
        "HOKUSAI_AUTH_CACHE_TTL_SECONDS",
        float,
        1.0,
        "per-worker cache of key and MLflow user/permission lookups, seconds (0–1; the "
        "staleness bound, see [Production](production.md#staleness-guarantee))",
        rule="a number of seconds between 0 and 1",
        bounds=(0, 1),
        shown_default="`1`",
    ),
    SettingSpec(
        "login_failure_limit",
        "HOKUSAI_LOGIN_FAILURE_LIMIT",
        _login_rate,
        "10/minute",
        "failed password logins allowed per source address and per user name, per worker, "
        "before `429` (`N/second`, `N/minute`, `N/hour`; a moving window)",
        rule="a rate such as 10/minute",
    ),
    SettingSpec(
        "max_key_lifetime_days",
        "HOKUSAI_MAX_KEY_LIFETIME_DAYS",
        _days,
        None,
        "longest lifetime of a new or rotated key, days (1–3650; empty = no maximum; see "
        "[Key management](key-management.md#lifetime-rules))",
        rule=_DAYS_RULE,
        bounds=(1, MAX_LIFETIME_DAYS),
    ),
    SettingSpec(
        "default_key_lifetime_days",
        "HOKUSAI_DEFAULT_KEY_LIFETIME_DAYS",
        _days,
        None,
        "lifetime of a new key whose creator gives none, days (≤ the maximum)",
        rule=_DAYS_RULE,
        bounds=(1, MAX_LIFETIME_DAYS),
        shown_default="none (never expires)",
    ),
    SettingSpec(
        "expire_unused_after_days",
        "HOKUSAI_EXPIRE_UNUSED_AFTER_DAYS",
        _days,
        None,
        "refuse keys unused for this many days (dormant)",
        rule=_DAYS_RULE,
        bounds=(1, MAX_LIFETIME_DAYS),
    ),
    SettingSpec(
        "rotation_grace",
        "HOKUSAI_ROTATION_GRACE",
        _duration,
        0,
        "overlap window of a rotation that names none (`0`, `3600`, `30m`, `24h`, `7d`; see "
        "[Key management](key-management.md#rotation-with-an-overlap-window))",
        rule=_GRACE_RULE,
        bounds=(0, MAX_ROTATION_GRACE_SECONDS),
        shown_default="`0` (immediate)",
    ),
    SettingSpec(
        "max_rotation_grace",
        "HOKUSAI_MAX_ROTATION_GRACE",
        _duration,
        DEFAULT_MAX_ROTATION_GRACE,
        "longest overlap window a rotation may ask for (at most 365 days)",
        rule=_GRACE_RULE,
        bounds=(0, MAX_ROTATION_GRACE_SECONDS),
        shown_default="`7d`",
    ),
    SettingSpec(
        "default_rate_limit",
        "HOKUSAI_DEFAULT_RATE_LIMIT",
        _key_rate_or_none,
        None,
        "rate limit of a new key that names none (`N/second`, `N/minute`, `N/hour`; only "
        "admins may then make keys without a limit; see "
        "[Key management](key-management.md#rate-limits))",
        rule=f"{_KEY_RATE_RULE}, such as 1000/hour, or empty for none",
    ),
    SettingSpec(
        "rate_limit_storage",
        "HOKUSAI_RATE_LIMIT_STORAGE",
        _stripped_or_none,
        None,
        "where rate limits are counted: empty = the key database; or a "
        "[`limits`](https://limits.readthedocs.io/) storage URI such as `redis://host:6379/0` "
        '(`pip install "mlflow-hokusai[redis]"`)',
        shown_default="the key database",
    ),
    SettingSpec(
        "rate_limit_unavailable",
        "HOKUSAI_RATE_LIMIT_UNAVAILABLE",
        _when_unavailable,
        "open",
        "when that store is unreachable: `open` (serve limited keys without a limit, log a "
        "warning) or `closed` (`503`)",
        rule="'open' (serve requests and log a warning) or 'closed' (answer 503)",
    ),
    SettingSpec(
        "token_exchange_limit",
        "HOKUSAI_TOKEN_EXCHANGE_LIMIT",
        parse_rate_limit,
        DEFAULT_TOKEN_EXCHANGE_LIMIT,
        "token exchanges allowed per client address ([Keyless CI](keyless-ci.md); "
        "`N/second`, `N/minute`, `N/hour`)",
        rule=f"{_KEY_RATE_RULE}, such as 30/minute",
    ),
    SettingSpec(
        "oidc_max_token_age",
        "HOKUSAI_OIDC_MAX_TOKEN_AGE",
        _duration,
        3600,
        "oldest workload OIDC token accepted, by its `iat` (`600`, `30m`, `1h`; 60 s to 24 h)",
        rule="a duration from 60 s to 24 h such as 600, 30m or 1h",
        bounds=(60, 86400),
        shown_default="`1h`",
    ),
    SettingSpec(
        "secret_scanning_keys_url",
        "HOKUSAI_SECRET_SCANNING_KEYS_URL",
        _http_url,
        DEFAULT_SECRET_SCANNING_KEYS_URL,
        "where the keys that sign secret scanning reports are published (GitHub's format; see "
        "[Key management](key-management.md#leaked-keys-secret-scanning))",
        rule="an http(s) URL such as https://api.github.com/meta/public_keys/secret_scanning",
    ),
    SettingSpec(
        "secret_scanning_limit",
        "HOKUSAI_SECRET_SCANNING_LIMIT",
        parse_rate_limit,
        DEFAULT_SECRET_SCANNING_LIMIT,
        "secret scanning reports allowed per client address (`N/second`, `N/minute`, `N/hour`)",
        rule=f"{_KEY_RATE_RULE}, such as 60/minute",
    ),
    SettingSpec(
        "oidc_issuer",
        "HOKUSAI_OIDC_ISSUER",
        _issuer,
        None,
        "the OpenID provider people sign in with (its issuer URL; discovery under it; see "
        "[Sign-in](sso.md)); empty = sign-in off",
        rule="an http(s) URL such as https://login.example.com/realms/ml, or empty",
    ),
    SettingSpec(
        "oidc_client_id",
        "HOKUSAI_OIDC_CLIENT_ID",
        _stripped_or_none,
        None,
        "this server's client id at the provider",
    ),
    SettingSpec(
        "oidc_client_secret",
        "HOKUSAI_OIDC_CLIENT_SECRET",
        _or_none,
        None,
        "its client secret (never logged; or the next setting)",
    ),
    SettingSpec(
        "oidc_client_secret_file",
        "HOKUSAI_OIDC_CLIENT_SECRET_FILE",
        _stripped_or_none,
        None,
        "a file holding the client secret",
    ),
    SettingSpec(
        "oidc_scopes",
        "HOKUSAI_OIDC_SCOPES",
        _scopes,
        DEFAULT_OIDC_SCOPES,
        "scopes asked for at sign-in (with `openid`)",
        rule="scopes separated by spaces, including openid",
    ),
    SettingSpec(
        "oidc_username_claim",
        "HOKUSAI_OIDC_USERNAME_CLAIM",
        _claim,
        "preferred_username",
        "the claim that names the MLflow user (falls back to `email`)",
        rule="a claim name (one word)",
    ),
    SettingSpec(
        "oidc_groups_claim",
        "HOKUSAI_OIDC_GROUPS_CLAIM",
        _claim,
        "groups",
        "the claim listing the person's groups",
        rule="a claim name (one word)",
    ),
    SettingSpec(
        "oidc_allowed_groups",
        "HOKUSAI_OIDC_ALLOWED_GROUPS",
        _names,
        (),
        "groups whose members may sign in (comma-separated); empty = anyone the provider "
        "authenticates",
        shown_default="none (anyone)",
    ),
    SettingSpec(
        "oidc_admin_groups",
        "HOKUSAI_OIDC_ADMIN_GROUPS",
        _names,
        (),
        "groups whose members are MLflow admins (granted and taken away at each sign-in)",
    ),
    SettingSpec(
        "oidc_group_roles",
        "HOKUSAI_OIDC_GROUP_ROLES",
        _group_roles,
        (),
        "MLflow roles given to groups' members: `group:role, group:role`",
        rule="comma-separated group:role pairs such as ml-team:trainers",
    ),
    SettingSpec(
        "oidc_redirect_uri",
        "HOKUSAI_OIDC_REDIRECT_URI",
        _http_url_or_none,
        None,
        "the callback URL registered at the provider (behind a proxy)",
        rule="an absolute http(s) URL ending in /hokusai/auth/callback, or empty",
        shown_default="built from the request",
    ),
    SettingSpec(
        "oidc_post_logout_redirect_uri",
        "HOKUSAI_OIDC_POST_LOGOUT_REDIRECT_URI",
        _http_url_or_none,
        None,
        "where the provider sends a person after sign-out (registered there)",
        rule="an absolute http(s) URL, or empty",
        shown_default="built from the request",
    ),
    SettingSpec(
        "session_lifetime",
        "HOKUSAI_SESSION_LIFETIME",
        _duration,
        DEFAULT_SESSION_LIFETIME,
        "longest life of a browser session (`30m`, `12h`, `7d`; 1 minute to 30 days)",
        rule="a duration from 1 minute to 30 days such as 12h",
        bounds=(60, 30 * 86400),
        shown_default="`12h`",
    ),
    SettingSpec(
        "session_idle_timeout",
        "HOKUSAI_SESSION_IDLE_TIMEOUT",
        _duration,
        DEFAULT_SESSION_IDLE_TIMEOUT,
        "a session unused this long ends (1 minute to 30 days, at most the lifetime)",
        rule="a duration from 1 minute to 30 days such as 1h",
        bounds=(60, 30 * 86400),
        shown_default="`1h`",
    ),
    SettingSpec(
        "key_webhook_urls",
        "HOKUSAI_KEY_WEBHOOK_URLS",
        _webhook_urls,
        (),
        "where key events are POSTed (https URLs, comma-separated; http only to a loopback "
        "host; see [Key management](key-management.md#key-event-webhooks)); empty = off",
        rule="https URLs separated by commas (http only to localhost, 127.0.0.1 or ::1)",
        shown_default="none (off)",
    ),
    SettingSpec(
        "key_webhook_secret",
        "HOKUSAI_KEY_WEBHOOK_SECRET",
        _or_none,
        None,
        "the secret key events are signed with, as MLflow signs its webhooks (at least 16 "
        "characters; never logged; or the next setting)",
    ),
    SettingSpec(
        "key_webhook_secret_file",
        "HOKUSAI_KEY_WEBHOOK_SECRET_FILE",
        _stripped_or_none,
        None,
        "a file holding the webhook secret",
    ),
    SettingSpec(
        "key_webhook_check_interval",
        "HOKUSAI_KEY_WEBHOOK_CHECK_INTERVAL",
        _duration,
        DEFAULT_KEY_WEBHOOK_CHECK_INTERVAL,
        "how often the server looks for keys to send `expiring` and `dormant` notices about "
        "(1 s to 1 day)",
        rule="a duration from 1 s to 1 day such as 15m",
        bounds=(1, 86400),
        shown_default="`15m`",
    ),
    SettingSpec(
        "key_webhook_max_backoff",
        "HOKUSAI_KEY_WEBHOOK_MAX_BACKOFF",
        _duration,
        DEFAULT_KEY_WEBHOOK_MAX_BACKOFF,
        "longest wait between retries to a failing receiver (waits double from 1 s; 1 s to 1 day)",
        rule="a duration from 1 s to 1 day such as 10m",
        bounds=(1, 86400),
        shown_default="`10m`",
    ),
    SettingSpec(
        "key_webhook_retry_for",
        "HOKUSAI_KEY_WEBHOOK_RETRY_FOR",
        _duration,
        DEFAULT_KEY_WEBHOOK_RETRY_FOR,
        "how long an event is retried before it is given up (logged; 1 minute to 30 days)",
        rule="a duration from 1 minute to 30 days such as 3d",
        bounds=(60, 30 * 86400),
        shown_default="`3d`",
    ),
    SettingSpec(
        "trusted_proxies",
        "HOKUSAI_TRUSTED_PROXIES",
        _networks,
        (),
        "proxies whose `X-Forwarded-For` names the client (addresses or CIDRs, "
        "comma-separated; see [Key management](key-management.md#ip-allowlists))",
        rule="IP addresses or CIDR ranges separated by commas or spaces",
    ),
)


def _check_lifetimes(values: dict) -> None:
    try:
        check_lifetime_rules(
            values["max_key_lifetime_days"],
            values["default_key_lifetime_days"],
            values["expire_unused_after_days"],
        )
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _check_grace(values: dict) -> None:
    if values["rotation_grace"] > values["max_rotation_grace"]:
        raise ConfigError(
            "rotation_grace (HOKUSAI_ROTATION_GRACE) must not exceed max_rotation_grace "
            f"(HOKUSAI_MAX_ROTATION_GRACE): {values['rotation_grace']} s > "
            f"{values['max_rotation_grace']} s"
        )


def _secret_from_file(values: dict, name: str) -> None:
    """``<name>_file`` read into ``<name>`` (only one of the two may be set)."""
    path, env = values[f"{name}_file"], f"HOKUSAI_{name.upper()}"
    if path and values[name]:
        raise ConfigError(f"set {env} or {env}_FILE, not both")
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                values[name] = f.read().strip() or None
        except OSError as e:
            raise ConfigError(
                f"{env}_FILE points to {path!r}, which cannot be read ({e.strerror})"
            ) from None


def _check_sign_in(values: dict) -> None:
    """Sign-in needs a client id and, read here from its file when given, a client secret
    (the server is a confidential client); the idle timeout lies within the lifetime."""
    if values["session_idle_timeout"] > values["session_lifetime"]:
        raise ConfigError(
            "session_idle_timeout (HOKUSAI_SESSION_IDLE_TIMEOUT) must not exceed "
            "session_lifetime (HOKUSAI_SESSION_LIFETIME)"
        )
    _secret_from_file(values, "oidc_client_secret")
    if values["oidc_issuer"] is None:
        return
    for name in ("oidc_client_id", "oidc_client_secret"):
        if not values[name]:
            raise ConfigError(
                f"{name} (HOKUSAI_{name.upper()}) is required when oidc_issuer "
                "(HOKUSAI_OIDC_ISSUER) is set"
            )


def _check_webhooks(values: dict) -> None:
    """Key events are always signed: receivers must be able to tell ours from forgeries."""
    _secret_from_file(values, "key_webhook_secret")
    if not values["key_webhook_urls"]:
        return
    secret = values["key_webhook_secret"]
    if not secret:
        raise ConfigError(
            "key_webhook_secret (HOKUSAI_KEY_WEBHOOK_SECRET or HOKUSAI_KEY_WEBHOOK_SECRET_FILE) "
            "is required when key_webhook_urls (HOKUSAI_KEY_WEBHOOK_URLS) is set: every key "
            "event is signed with it"
        )
    if len(secret) < MIN_KEY_WEBHOOK_SECRET:
        raise ConfigError(
            f"key_webhook_secret must be at least {MIN_KEY_WEBHOOK_SECRET} characters, not "
            f"{len(secret)} (e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )


# Rules between settings, checked once each setting is valid on its own.
_CROSS_CHECKS: tuple[Callable[[dict], None], ...] = (
    _check_lifetimes,
    _check_grace,
    _check_sign_in,
    _check_webhooks,
)


def load_settings(environ: dict | None = None) -> Settings:
    environ = os.environ if environ is None else environ
    parser = _read_ini(environ.get("HOKUSAI_CONFIG"))
    section = dict(parser["hokusai"]) if parser.has_section("hokusai") else {}
    values = {}
    for spec in SETTINGS:
        if spec.env in environ:
            values[spec.name] = spec.read(environ[spec.env], "the environment")
        elif spec.ini in section:
            values[spec.name] = spec.read(section[spec.ini], "the config file")
        else:
            values[spec.name] = spec.default
    for check in _CROSS_CHECKS:
        check(values)
    mlflow_section = dict(parser["mlflow"]) if parser.has_section("mlflow") else {}
    return Settings(**values, mlflow_section=mlflow_section, hokusai_section=section)


# -- the docs' table ---------------------------------------------------------------------------
# Rows of docs/configuration.md's table that are not [hokusai] settings.
_DOC_ROWS_BEFORE = (("config file", "HOKUSAI_CONFIG", "", "packaged defaults"),)
_DOC_ROWS_AFTER = (
    (
        "Flask secret key (CSRF)",
        "MLFLOW_FLASK_SERVER_SECRET_KEY",
        "",
        "generated once, stored in the key database, shared by all workers",
    ),
)


def settings_table_markdown() -> str:
    """The settings table of ``docs/configuration.md`` (a test checks the page has it)."""
    rows = [*_DOC_ROWS_BEFORE, *(spec.doc_row() for spec in SETTINGS), *_DOC_ROWS_AFTER]
    lines = [
        "| setting | environment | config (`[hokusai]`) | default |",
        "| --- | --- | --- | --- |",
    ]
    for description, env, ini, default in rows:
        ini_cell = f"`{ini}`" if ini else "–"
        lines.append(f"| {description} | `{env}` | {ini_cell} | {default} |")
    return "\n".join(lines) + "\n"
