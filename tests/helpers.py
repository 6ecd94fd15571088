"""Small helpers shared by tests (keys written straight into a server's database, etc.)."""

from datetime import timedelta

from mlflow_hokusai.keys.format import generate_key
from mlflow_hokusai.keys.management import store_key
from mlflow_hokusai.store.clock import utcnow
from mlflow_hokusai.store.engine import get_engine
from mlflow_hokusai.store.keys import KeyStore


def insert_expired_key(database_uri: str, username: str) -> str:
    """A key for ``username`` that expired a minute ago (the CLI cannot make one)."""
    key = generate_key()
    store_key(
        KeyStore(get_engine(database_uri)),
        key,
        username,
        name="expired",
        expires_at=utcnow() - timedelta(minutes=1),
    )
    return key


def key_id_of(server, key: str) -> str:
    return server.get("/api/2.0/mlflow/hokusai/whoami", key).json()["key_id"]


def api_key_for(server, username: str) -> str:
    """A new key for ``username`` (created if missing), made by the admin over REST: much
    faster than ``server.create_key``, which starts a CLI process that imports MLflow."""
    response = server.post(
        "/api/2.0/mlflow/hokusai/api-keys/create", server.admin_key, json={"username": username}
    )
    assert response.status_code == 200, response.text
    return response.json()["key"]


def key_database(path, users=("alice",)):
    """A SQLite key database at ``path`` with our tables and MLflow's ``users`` table (the
    columns a key lookup joins on), holding ``users`` (non-admin): for in-process tests."""
    from mlflow_hokusai.store.engine import upgrade
    from mlflow_hokusai.store.models import mlflow_users

    engine = get_engine(f"sqlite:///{path}")
    upgrade(engine)
    mlflow_users.metadata.create_all(engine)
    with engine.begin() as conn:
        for number, username in enumerate(users, start=1):
            conn.execute(mlflow_users.insert().values(id=number, username=username, is_admin=0))
    return engine
