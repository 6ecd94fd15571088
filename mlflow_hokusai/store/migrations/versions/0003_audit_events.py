"""Audit trail of key lifecycle events and refused key uses.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "hokusai_audit_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("occurred_at", sa.DateTime(), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.Column("username", sa.String(255), nullable=True),
        sa.Column("source", sa.String(255), nullable=True),
        sa.Column("detail", sa.String(512), nullable=False, server_default=""),
    )
    op.create_index("ix_hokusai_audit_events_occurred_at", "hokusai_audit_events", ["occurred_at"])
    op.create_index("ix_hokusai_audit_events_username", "hokusai_audit_events", ["username"])


def downgrade():
    op.drop_index("ix_hokusai_audit_events_username", "hokusai_audit_events")
    op.drop_index("ix_hokusai_audit_events_occurred_at", "hokusai_audit_events")
    op.drop_table("hokusai_audit_events")
