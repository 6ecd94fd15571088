"""Resource-limited keys: the experiments and registered models a key may touch, as JSON.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("hokusai_api_keys") as batch:
        batch.add_column(sa.Column("resource_limits", sa.Text(), nullable=True))


def downgrade():
    with op.batch_alter_table("hokusai_api_keys") as batch:
        batch.drop_column("resource_limits")
