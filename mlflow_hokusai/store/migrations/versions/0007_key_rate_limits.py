"""Per-key rate limits: the key's limit ("N/second|minute|hour", NULL = none), and the shared
moving-window counters that enforce it across workers and replicas when no Redis is
configured: a row per counter (the lock every taker holds while it counts) and its entries.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("hokusai_api_keys") as batch:
        batch.add_column(sa.Column("rate_limit", sa.String(32), nullable=True))
    op.create_table(
        "hokusai_rate_counters",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("touched_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_hokusai_rate_counters_touched_at", "hokusai_rate_counters", ["touched_at"])
    op.create_table(
        "hokusai_rate_hits",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("amount", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_hokusai_rate_hits_name_at", "hokusai_rate_hits", ["name", "at"])
    op.create_index("ix_hokusai_rate_hits_expires_at", "hokusai_rate_hits", ["expires_at"])


def downgrade():
    op.drop_table("hokusai_rate_hits")
    op.drop_table("hokusai_rate_counters")
    with op.batch_alter_table("hokusai_api_keys") as batch:
        batch.drop_column("rate_limit")
