"""A real ``mlflow server --app-name hokusai`` subprocess for tests and benchmarks."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent():
    """Run in the child: own session (so stop() can kill the whole tree) and SIGTERM when the
    test process dies, so an interrupted test run never leaves servers behind. (The signal
    fires when the *thread* that started the server ends: start servers from a long-lived
    thread, e.g. the main one.)"""
    os.setsid()
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def clean_env(**extra) -> dict:
    """The parent's environment without settings that would leak into a server or client."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("HOKUSAI_", "MLFLOW_", "_MLFLOW_"))
    }
    env.update({k: str(v) for k, v in extra.items() if v is not None})
    return env


class Server:
    """Start with ``start()``; ``url`` is the root, ``admin_key`` the bootstrap key."""

    def __init__(
        self,
        workdir: str | None = None,
        *,
        workers: int = 2,
        env: dict | None = None,
        args: list[str] | None = None,
        app_name: str | None = "hokusai",
        backend_store_uri: str | None = None,
        health_path: str = "/health",
        python: str | None = None,
        tls: bool = False,
    ):
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="hokusai-test-"))
        self.workers = workers
        self.python = python or sys.executable  # another environment's, e.g. another MLflow
        self.port = free_port()
        # tls: HTTPS with a self-signed certificate (tests/tls.py); clients pass
        # ``verify=server.verify`` (the certificate file) to trust it.
        self.tls = tls
        self.verify: str | bool = True
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.app_name = app_name
        self.health_path = health_path  # e.g. PREFIX/health under --static-prefix PREFIX
        self.extra_env = env or {}
        self.args = args or []
        self.backend_store_uri = backend_store_uri or f"sqlite:///{self.workdir / 'mlflow.db'}"
        self.log_path = self.workdir / f"server-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def database_uri(self) -> str:
        return (
            self.extra_env.get("HOKUSAI_DATABASE_URI")
            or f"sqlite:///{self.workdir / 'hokusai_auth.db'}"
        )

    @property
    def admin_key(self) -> str:
        return self.extra_env.get("HOKUSAI_ADMIN_API_KEY") or (
            (self.workdir / "hokusai_admin_key").read_text().strip()
        )

    def env(self) -> dict:
        # MLflow's background job runner is not under test and costs a process per server.
        return clean_env(**{"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **self.extra_env})

    def start(self, timeout: float = 240.0) -> Server:
        self.launch()
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def launch(self) -> Server:
        """Start the process without waiting for it (``wait_ready`` does), e.g. to start several
        servers at once — from a long-lived thread (see ``_die_with_parent``)."""
        cmd = [
            self.python,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--backend-store-uri",
            self.backend_store_uri,
            *self.args,
        ]
        if self.app_name:
            cmd += ["--app-name", self.app_name]
        if not any(a.startswith(("--gunicorn-opts", "--waitress-opts")) for a in self.args):
            cmd += ["--workers", str(self.workers)]
            if not any(a.startswith("--uvicorn-opts") for a in self.args):
                # uvicorn kills a worker that does not answer its 5 s health check; on a busy
                # 2-core machine a worker still importing MLflow can miss it, forever.
                cmd += ["--uvicorn-opts", "--timeout-worker-healthcheck 120" + self._tls_opts()]
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            cmd,
            cwd=self.workdir,
            env=self.env(),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        return self

    def _tls_opts(self) -> str:
        if not self.tls:
            return ""
        from tests.tls import self_signed

        cert, key = self_signed(self.workdir)
        self.verify = str(cert)
        return f" --ssl-certfile {cert} --ssl-keyfile {key}"

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                health = requests.get(self.url + self.health_path, timeout=2, verify=self.verify)
                if health.status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.2)
        else:
            raise TimeoutError(f"server did not become healthy:\n{self.log_text()}")
        # /health answers as soon as one worker is up; wait for all of them.
        while time.monotonic() < deadline:
            started = self.log_text().count("Application startup complete")
            booted = self.log_text().count("Booting worker")  # gunicorn
            if (
                started >= self.workers
                or booted >= self.workers
                or "--waitress" in " ".join(self.args)
                or "--gunicorn" in " ".join(self.args)
            ):
                return
            time.sleep(0.2)
        raise TimeoutError(f"not all workers started:\n{self.log_text()}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if getattr(self, "log", None):
            self.log.close()

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run ``mlflow-hokusai`` on this server's database, offline."""
        cmd = [sys.executable, "-m", "mlflow_hokusai.cli", *args]
        if args and args[0] in ("keys", "db") and "--database-uri" not in args:
            cmd += ["--database-uri", self.database_uri]
        result = subprocess.run(
            cmd, cwd=self.workdir, env=self.env(), capture_output=True, text=True, timeout=120
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{cmd} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def create_key(self, user: str, *options: str) -> str:
        return self.cli("keys", "create", "--user", user, *options).stdout.strip()

    def get(self, path: str, key: str | None = None, **kwargs):
        headers = kwargs.pop("headers", {})
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return requests.get(
            self.url + path, headers=headers, timeout=30, verify=self.verify, **kwargs
        )

    def post(self, path: str, key: str | None = None, **kwargs):
        headers = kwargs.pop("headers", {})
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return requests.post(
            self.url + path, headers=headers, timeout=30, verify=self.verify, **kwargs
        )

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
