"""Where each key is used from: ``hokusai_key_addresses``, a row per key and client address
with when the key was last seen from there (at most five per key, the most recent; the
authenticator writes a row at most once a minute per key, address and worker).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "hokusai_key_addresses",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("address", sa.String(64), primary_key=True),
        sa.Column("last_seen_at", sa.DateTime(), nullable=False),
    )


def downgrade():
    op.drop_table("hokusai_key_addresses")
