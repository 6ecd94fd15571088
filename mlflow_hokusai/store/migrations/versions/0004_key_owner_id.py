"""Bind each key to its owner's MLflow user id, so a user re-created under an old name never
inherits the old user's keys. Keys whose owner no longer exists are revoked (and audited).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("hokusai_api_keys") as batch:
        batch.add_column(sa.Column("user_id", sa.Integer(), nullable=True))
        batch.create_index("ix_hokusai_api_keys_user_id", ["user_id"])
    bind = op.get_bind()
    if not sa.inspect(bind).has_table("users"):
        return  # a new database: MLflow's auth tables (and any key) come later
    bind.execute(
        sa.text(
            "UPDATE hokusai_api_keys SET user_id = "
            "(SELECT users.id FROM users WHERE users.username = hokusai_api_keys.username)"
        )
    )
    now = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
    orphans = bind.execute(
        sa.text(
            "SELECT id, username FROM hokusai_api_keys WHERE user_id IS NULL AND revoked_at IS NULL"
        )
    ).all()
    for key_id, username in orphans:
        bind.execute(
            sa.text("UPDATE hokusai_api_keys SET revoked_at = :now WHERE id = :id"),
            {"now": now, "id": key_id},
        )
        bind.execute(
            sa.text(
                "INSERT INTO hokusai_audit_events "
                "(occurred_at, event, actor, key_id, username, source, detail) "
                "VALUES (:now, 'revoked', 'migration 0004', :id, :username, 'local', "
                "'owner no longer exists')"
            ),
            {"now": now, "id": key_id, "username": username},
        )


def downgrade():
    with op.batch_alter_table("hokusai_api_keys") as batch:
        batch.drop_index("ix_hokusai_api_keys_user_id")
        batch.drop_column("user_id")
