"""Rotation with an overlap window: a rotated key may keep working until ``rotation_ends_at``;
the old key names its replacement (id and display prefix) so a refusal can point to it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("hokusai_api_keys") as batch:
        batch.add_column(sa.Column("rotation_ends_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("replaced_by", sa.String(32), nullable=True))
        batch.add_column(sa.Column("replaced_by_prefix", sa.String(16), nullable=True))


def downgrade():
    with op.batch_alter_table("hokusai_api_keys") as batch:
        batch.drop_column("replaced_by_prefix")
        batch.drop_column("replaced_by")
        batch.drop_column("rotation_ends_at")
