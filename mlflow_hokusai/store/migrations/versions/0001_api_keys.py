"""API keys and settings.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "hokusai_api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("display_prefix", sa.String(16), nullable=False),
        sa.Column("username", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False, server_default=""),
        sa.Column("scope", sa.String(16), nullable=False, server_default="write"),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.Column("last_used_at", sa.DateTime(), nullable=True),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
    )
    op.create_index("ix_hokusai_api_keys_digest", "hokusai_api_keys", ["digest"], unique=True)
    op.create_index("ix_hokusai_api_keys_username", "hokusai_api_keys", ["username"])
    op.create_table(
        "hokusai_settings",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )


def downgrade():
    op.drop_table("hokusai_settings")
    op.drop_index("ix_hokusai_api_keys_username", "hokusai_api_keys")
    op.drop_index("ix_hokusai_api_keys_digest", "hokusai_api_keys")
    op.drop_table("hokusai_api_keys")
