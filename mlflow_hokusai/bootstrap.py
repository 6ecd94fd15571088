"""Start-up: everything a worker needs before serving, safe when workers and replicas race.

Under one start-up lock: our migrations, the shared Flask secret key, MLflow's auth engine
(its migrations and admin user) and the admin API key.
"""

from __future__ import annotations

import configparser
import logging
import os
import secrets
import socket
import stat
import tempfile
import threading
import time
from dataclasses import dataclass

import sqlalchemy as sa

from mlflow_hokusai import _mlflow
from mlflow_hokusai.config import Settings
from mlflow_hokusai.keys import format as keyformat
from mlflow_hokusai.keys.management import issue_key, store_key
from mlflow_hokusai.store.engine import get_engine, sqlite_path, startup_lock, upgrade
from mlflow_hokusai.store.keys import KeyStore
from mlflow_hokusai.store.models import mlflow_users

_logger = logging.getLogger("mlflow_hokusai")
ADMIN_KEY_FILE = "hokusai_admin_key"
ADMIN_PASSWORD_FILE = "hokusai_admin_password"


@dataclass
class Started:
    key_store: KeyStore
    flask_app: object
    runner_app: object  # what MLflow's engine returned: FastAPI (uvicorn) or Flask (WSGI)


def bootstrap_dir(settings: Settings) -> str:
    if settings.bootstrap_dir:
        return settings.bootstrap_dir
    path = sqlite_path(settings.database_uri)
    return os.path.dirname(path) if path else os.getcwd()


def write_private_file(path: str, content: str) -> None:
    """Write ``content`` to ``path`` readable by the owner only (0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, content.encode())
    finally:
        os.close(fd)


def _write_mlflow_auth_config(settings: Settings, admin_password: str) -> str:
    """MLflow's auth engine reads its ini once, when ``mlflow.server.auth`` is imported.

    The file lives in a private (0700) temp dir and is deleted once the app is built.
    ``admin_password`` is only used by MLflow to create a missing admin; MLflow 3.15 requires
    the key even when the admin exists.
    """
    parser = configparser.ConfigParser(interpolation=None)
    section = {"default_permission": "READ", **settings.mlflow_section}
    section.update(
        database_uri=settings.database_uri,
        admin_username=settings.admin_username,
        admin_password=admin_password,
        authorization_function=_mlflow.AUTHORIZATION_FUNCTION,
    )
    parser["mlflow"] = section
    path = os.path.join(tempfile.mkdtemp(prefix="mlflow-hokusai-"), "auth.ini")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        parser.write(handle)
    return path


def _admin_exists(engine, username: str) -> bool:
    try:
        with engine.connect() as conn:
            row = conn.execute(
                sa.select(mlflow_users.c.id).where(mlflow_users.c.username == username)
            ).first()
    except sa.exc.OperationalError:
        return False  # MLflow's auth tables do not exist yet
    except sa.exc.ProgrammingError:
        return False
    return row is not None


def _admin_password(settings: Settings, engine) -> str | None:
    if settings.admin_password or _admin_exists(engine, settings.admin_username):
        return settings.admin_password
    password = secrets.token_urlsafe(24)
    path = os.path.join(bootstrap_dir(settings), ADMIN_PASSWORD_FILE)
    write_private_file(path, password + "\n")
    _logger.warning(
        "Created the MLflow admin user %r; its generated password is in %s (mode 0600).",
        settings.admin_username,
        path,
    )
    return password


def _ensure_admin_key(settings: Settings, store: KeyStore) -> None:
    admin = settings.admin_username
    if settings.admin_api_key:
        parsed = keyformat.parse_key(settings.admin_api_key)
        record = store.lookup(parsed.digest)
        if record is None:
            store_key(store, parsed.key, admin, name="bootstrap (HOKUSAI_ADMIN_API_KEY)")
            _logger.info("Registered HOKUSAI_ADMIN_API_KEY for user %r.", admin)
        elif record.username != admin:
            raise RuntimeError("HOKUSAI_ADMIN_API_KEY belongs to another user; refusing to start")
        elif record.status() != "active":
            _logger.warning("HOKUSAI_ADMIN_API_KEY is %s; it will be refused.", record.status())
        return
    if store.has_active_key(admin):
        return
    key, _ = issue_key(store, admin, environment=settings.key_environment, name="bootstrap")
    path = os.path.join(bootstrap_dir(settings), ADMIN_KEY_FILE)
    write_private_file(path, key + "\n")
    _logger.warning("Generated an admin API key for %r; it is in %s (mode 0600).", admin, path)


# Set by ``app.py`` when ``mlflow server`` imports it (inherited by every worker it starts):
# one value per server, so that only the first worker ready logs the ready line.
SERVER_RUN_VARIABLE = "_MLFLOW_HOKUSAI_SERVER_RUN"


def _first_ready() -> bool:
    """True in the first worker of this server to be ready (an exclusive create of a file
    named by the server run claims it; a worker that uvicorn restarts later finds it taken);
    True everywhere when the app was not started by ``mlflow server``."""
    run = os.environ.get(SERVER_RUN_VARIABLE)
    if not run or not run.isalnum():
        return True
    claim = os.path.join(tempfile.gettempdir(), f"{READY_CLAIM_PREFIX}{run}")
    try:
        os.close(os.open(claim, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        return False
    except OSError:
        return True  # better twice than never
    _sweep_ready_claims(tempfile.gettempdir(), keep=claim)
    return True


READY_CLAIM_PREFIX = "mlflow-hokusai-ready-"
READY_CLAIM_DAYS = 2  # an older claim's server has long logged its line


def _sweep_ready_claims(folder: str, keep: str, now: float | None = None) -> None:
    """Remove the empty claim files of servers started more than ``READY_CLAIM_DAYS`` ago
    (a server that is stopped cannot remove its own: its workers are killed), so they do not
    pile up in the temp folder."""
    now = time.time() if now is None else now
    try:
        names = [n for n in os.listdir(folder) if n.startswith(READY_CLAIM_PREFIX)]
    except OSError:
        return
    for name in names:
        path = os.path.join(folder, name)
        try:
            stale = path != keep and now - os.stat(path).st_mtime > READY_CLAIM_DAYS * 86400
            if stale and os.path.getsize(path) == 0:
                os.remove(path)
        except OSError:
            pass  # another server swept it, or not ours to remove


def _listening(descriptors=None) -> bool:
    """True once this process has a listening TCP socket (among ``descriptors``; None: all).
    uvicorn's workers call ``listen`` on the socket they inherit only after the app is built
    (before that, connections are refused); gunicorn's master listens first; waitress binds
    after the app is built."""
    if descriptors is None:
        try:
            descriptors = [int(name) for name in os.listdir("/proc/self/fd")]
        except OSError:
            return True  # not Linux: no way to tell, say it now
    for fd in descriptors:
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            with socket.socket(fileno=os.dup(fd)) as sock:
                if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.getsockopt(
                    socket.SOL_SOCKET, socket.SO_ACCEPTCONN
                ):
                    return True
        except OSError:
            continue
    return False


def announce_when_listening(settings: Settings, timeout: float = 120.0) -> None:
    """``announce_ready`` from a daemon thread once this worker listens (or after
    ``timeout`` seconds): a client that acts on the line is not refused a connection."""

    def wait_then_announce():
        deadline = time.monotonic() + timeout
        while not _listening() and time.monotonic() < deadline:
            time.sleep(0.05)
        announce_ready(settings)

    threading.Thread(target=wait_then_announce, name="hokusai-ready", daemon=True).start()


def announce_ready(settings: Settings) -> None:
    """Log the one line saying the server takes keys, naming the admin key's file (never the
    key), once per server: after migrations, the bootstrap and the app are done and the first
    worker listens."""
    if not _first_ready():
        return
    if settings.admin_api_key:
        where = "admin key from HOKUSAI_ADMIN_API_KEY"
    else:
        path = os.path.join(bootstrap_dir(settings), ADMIN_KEY_FILE)
        where = f"admin key in {path}" if os.path.exists(path) else f"no {path} (removed)"
    _logger.warning("mlflow-hokusai ready: the server takes API keys; %s", where)


def start(settings: Settings) -> Started:
    engine = get_engine(settings.database_uri)
    store = KeyStore(engine)
    _mlflow.preload()
    with startup_lock(engine):
        upgrade(engine)
        if not os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY"):
            os.environ["MLFLOW_FLASK_SERVER_SECRET_KEY"] = store.setting(
                "flask_secret_key", lambda: secrets.token_hex(32)
            )
        # When the admin exists the password is unused; a random one keeps the file harmless.
        password = _admin_password(settings, engine) or secrets.token_urlsafe(24)
        config_path = _write_mlflow_auth_config(settings, password)
        os.environ["MLFLOW_AUTH_CONFIG_PATH"] = config_path
        try:
            flask_app, runner_app = _mlflow.build_auth_app()
        finally:
            os.remove(config_path)
            os.rmdir(os.path.dirname(config_path))
        _ensure_admin_key(settings, store)
    return Started(store, flask_app, runner_app)
