"""Engines, migrations and the start-up lock."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import tempfile
import time
from importlib import resources

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine, make_url

_logger = logging.getLogger(__name__)
VERSION_TABLE = "hokusai_alembic_version"
_ENGINES: dict[str, Engine] = {}


def sqlite_path(database_uri: str) -> str | None:
    """The file path of a SQLite database URI, or None (in-memory or another dialect)."""
    url = make_url(database_uri)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return os.path.abspath(url.database)


def get_engine(database_uri: str) -> Engine:
    """One engine per URI per process."""
    engine = _ENGINES.get(database_uri)
    if engine is None:
        _create_private(sqlite_path(database_uri))
        url = make_url(database_uri)
        kwargs: dict = {"pool_pre_ping": True}
        if url.get_backend_name() == "sqlite":
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        else:
            kwargs.update(pool_size=5, max_overflow=10, pool_recycle=1800)
        engine = sa.create_engine(url, **kwargs)
        if url.get_backend_name() == "sqlite":
            sa.event.listen(engine, "connect", _sqlite_on_connect)
        _ENGINES[database_uri] = engine
    return engine


def _create_private(path: str | None) -> None:
    """Create a SQLite file readable by its owner only (0600) before SQLite creates it with
    the umask's mode: it holds key digests, password hashes and the Flask secret key. SQLite
    gives its -wal and -shm files the database file's mode. An existing file is left as is."""
    if path is None or os.path.exists(path):
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except (FileExistsError, FileNotFoundError):  # another worker made it; no directory
        pass  # (SQLite then reports its own error)


def _sqlite_on_connect(dbapi_conn, _record):
    # WAL lets readers proceed while a worker writes; busy_timeout rides out short write locks.
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def insert_for(dialect: str):
    """The dialect's ``insert`` (it has ``on_conflict_do_update``, an upsert in one statement)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - the key database is SQLite or PostgreSQL
        raise ValueError(f"the key database must be SQLite or PostgreSQL, not {dialect}")
    return insert


def _alembic_config(connection) -> Config:
    cfg = Config()
    cfg.set_main_option(
        "script_location", str(resources.files("mlflow_hokusai.store").joinpath("migrations"))
    )
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(engine: Engine) -> None:
    """Apply our migrations (idempotent). Callers serialise with ``startup_lock``."""
    with engine.begin() as connection:
        command.upgrade(_alembic_config(connection), "head")


@contextlib.contextmanager
def startup_lock(engine: Engine, timeout: float = 120.0):
    """Serialise start-up work across workers (and, on PostgreSQL, across replicas).

    SQLite: an flock on a file beside the database. PostgreSQL: a session advisory lock.
    Other dialects: a file lock in the temp directory (correct on one machine).
    """
    backend = engine.url.get_backend_name()
    if backend == "postgresql":
        lock_id = int.from_bytes(hashlib.sha256(b"mlflow-hokusai-startup").digest()[:7], "big")
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_advisory_lock(:id)"), {"id": lock_id})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:id)"), {"id": lock_id})
                conn.commit()
        return
    path = sqlite_path(engine.url.render_as_string(hide_password=False))
    if path:
        lock_path = path + ".lock"
    else:
        name = hashlib.sha256(engine.url.render_as_string().encode()).hexdigest()[:16]
        lock_path = os.path.join(tempfile.gettempdir(), f"mlflow-hokusai-{name}.lock")
    deadline = time.monotonic() + timeout
    with open(lock_path, "a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"could not take the start-up lock {lock_path}") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
