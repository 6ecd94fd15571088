import contextlib
import os

import pytest

from tests.server import Server


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """One shared server with two uvicorn workers (SQLite stores, local proxied artifacts)."""
    srv = Server(str(tmp_path_factory.mktemp("server")), workers=2)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL cluster (tests/pg.py); ``create_database(name)`` gives a URI.
    Fails, never skips, when PostgreSQL is not installed."""
    from tests.pg import PostgresCluster

    cluster = PostgresCluster().start()
    yield cluster
    cluster.destroy()


@pytest.fixture(scope="session")
def redis_server():
    """A throwaway ``redis-server`` (tests/redis_server.py). Fails, never skips, when Redis is
    not installed."""
    from tests.redis_server import RedisServer

    server = RedisServer().start()
    yield server
    server.destroy()


@pytest.fixture(scope="module")
def chromium():
    """Headless Chromium (the system's, through Playwright: tests/browser.py). Module-scoped:
    while Playwright's sync API is open its event loop counts as running, and other modules'
    tests call ``asyncio.run``."""
    from playwright.sync_api import sync_playwright

    from tests.browser import launch

    with sync_playwright() as playwright:
        browser = launch(playwright)
        yield browser
        browser.close()


@pytest.fixture
def tracking(monkeypatch):
    """Point the stock MLflow client at a server with a key, the way users do."""

    @contextlib.contextmanager
    def use(srv, key, prefix=""):
        for name in list(os.environ):
            if name.startswith("MLFLOW_"):
                monkeypatch.delenv(name)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", srv.url + prefix)
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", key)
        import mlflow

        mlflow.set_tracking_uri(srv.url + prefix)
        try:
            yield mlflow
        finally:
            mlflow.set_tracking_uri(None)

    return use
