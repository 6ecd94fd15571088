"""Key event webhooks: the outbox of events to send, the notices sent about keys, and leases.

- ``hokusai_webhook_outbox``: one row per key event, written in the transaction of its audit
  event, with the exact JSON to send, its delivery id (unique: receivers dedupe on it) and
  what each receiver answered;
- ``hokusai_key_notices``: ``expiring-7d``, ``expiring-1d`` and ``dormant`` notices, one per
  key each (the primary key), so two replicas never send one twice;
- ``hokusai_leases``: which process runs a job only one may run (the webhook sender).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-10
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "hokusai_webhook_outbox",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("delivery_id", sa.String(36), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("results", sa.Text(), nullable=False, server_default="{}"),
        sa.Column("last_error", sa.String(512), nullable=True),
        sa.Column("done_at", sa.DateTime(), nullable=True),
        sa.UniqueConstraint("delivery_id", name="uq_hokusai_webhook_outbox_delivery_id"),
    )
    op.create_index("ix_hokusai_webhook_outbox_done_at", "hokusai_webhook_outbox", ["done_at"])
    op.create_table(
        "hokusai_key_notices",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("notice", sa.String(16), primary_key=True),
        sa.Column("noticed_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "hokusai_leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
    )


def downgrade():
    op.drop_table("hokusai_leases")
    op.drop_table("hokusai_key_notices")
    op.drop_index("ix_hokusai_webhook_outbox_done_at", "hokusai_webhook_outbox")
    op.drop_table("hokusai_webhook_outbox")
