"""Short-lived claims that serialise concurrent writes of the same Hokusai token id.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "hokusai_token_claims",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("token_key", sa.String(64), nullable=False),
        sa.Column("model_name", sa.String(256), nullable=False),
        sa.Column("claimed_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_hokusai_token_claims_token_key", "hokusai_token_claims", ["token_key"])


def downgrade():
    op.drop_index("ix_hokusai_token_claims_token_key", "hokusai_token_claims")
    op.drop_table("hokusai_token_claims")
