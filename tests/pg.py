"""A throwaway PostgreSQL cluster for tests: initdb in a temp dir, loopback only, fsync off.

PostgreSQL refuses to run as root, so when the tests run as root (CI does) the cluster is owned
by and run as the unprivileged ``postgres`` OS user (created if missing). A missing PostgreSQL
install is an error, never a skip: ``.ci/run`` installs it.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time

import psycopg

from tests.server import free_port

OS_USER = "postgres"


def find_bin_dir() -> str:
    """The newest /usr/lib/postgresql/*/bin that has initdb (or initdb on PATH)."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(p.split("/")[-3]) if p.split("/")[-3].isdigit() else 0,
    )
    if candidates:
        return os.path.dirname(candidates[-1])
    found = shutil.which("initdb")
    if found:
        return os.path.dirname(found)
    raise RuntimeError(
        "PostgreSQL is not installed (no initdb in /usr/lib/postgresql/*/bin or on PATH); "
        "run `apt-get install postgresql` (.ci/run does)"
    )


def _ensure_os_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(OS_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/bin/sh", OS_USER], check=True
        )
        return pwd.getpwnam(OS_USER)


class PostgresCluster:
    """``start()`` / ``stop()`` (fast shutdown, data kept) / ``destroy()``; ``uri(db)``."""

    def __init__(self):
        self.bin = find_bin_dir()
        self.as_root = os.geteuid() == 0
        self.dir = tempfile.mkdtemp(prefix="hokusai-pg-")
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "postgres.log")
        self.port = free_port()
        if self.as_root:
            user = _ensure_os_user()
            os.chown(self.dir, user.pw_uid, user.pw_gid)
        os.chmod(self.dir, 0o700)
        self._run(
            os.path.join(self.bin, "initdb"),
            "-D",
            self.data,
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-instructions",
        )

    def _run(self, *cmd: str, timeout: float = 120) -> subprocess.CompletedProcess:
        if self.as_root:
            cmd = ("runuser", "-u", OS_USER, "--", *cmd)
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.dir)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def start(self) -> PostgresCluster:
        options = (
            f"-h 127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        self._run(
            os.path.join(self.bin, "pg_ctl"),
            "-D",
            self.data,
            "-l",
            self.log,
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.uri("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        """Fast shutdown (open connections are cut); the data directory stays."""
        self._run(os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-m", "fast", "-w", "stop")

    def is_running(self) -> bool:
        return os.path.exists(os.path.join(self.data, "postmaster.pid"))

    def destroy(self) -> None:
        if os.path.isdir(self.data) and self.is_running():
            try:
                self._run(
                    os.path.join(self.bin, "pg_ctl"),
                    "-D",
                    self.data,
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                )
            except RuntimeError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def uri(self, database: str) -> str:
        """Usable by SQLAlchemy (2.1 maps postgresql:// to psycopg 3) and psycopg alike."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create an empty database and return its SQLAlchemy URI."""
        with psycopg.connect(self.uri("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.uri(name)
