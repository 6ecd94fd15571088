"""Alembic environment: always run online on the connection handed in by ``engine.upgrade``."""

from alembic import context

from mlflow_hokusai.store.engine import VERSION_TABLE
from mlflow_hokusai.store.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
