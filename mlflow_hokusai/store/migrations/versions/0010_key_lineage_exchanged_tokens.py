"""Key lineage, and the workload tokens exchanged lately.

- A key and its replacements share one id (their rate-limit counter): every key gets the id of
  the first key of its rotation chain (its own id for a key that replaced none); keys made
  before this revision get theirs from the ``replaced_by`` links.
- ``hokusai_exchanged_tokens``: a digest per exchanged OIDC token and when it may be exchanged
  again, so a replayed token is refused on every worker and replica.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("hokusai_api_keys") as batch:
        batch.add_column(sa.Column("lineage", sa.String(32), nullable=True))
    keys = sa.table(
        "hokusai_api_keys",
        sa.column("id", sa.String),
        sa.column("replaced_by", sa.String),
        sa.column("lineage", sa.String),
    )
    conn = op.get_bind()
    predecessor = {
        new: old for old, new in conn.execute(sa.select(keys.c.id, keys.c.replaced_by)) if new
    }
    ids = [row[0] for row in conn.execute(sa.select(keys.c.id))]
    for key_id in ids:
        root, seen = key_id, {key_id}
        while root in predecessor and predecessor[root] not in seen:
            root = predecessor[root]
            seen.add(root)
        conn.execute(sa.update(keys).where(keys.c.id == key_id).values(lineage=root))
    op.create_index("ix_hokusai_api_keys_lineage", "hokusai_api_keys", ["lineage"])
    op.create_table(
        "hokusai_exchanged_tokens",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("reuse_after", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
    )
    op.create_index(
        "ix_hokusai_exchanged_tokens_expires_at", "hokusai_exchanged_tokens", ["expires_at"]
    )


def downgrade():
    op.drop_index("ix_hokusai_exchanged_tokens_expires_at", "hokusai_exchanged_tokens")
    op.drop_table("hokusai_exchanged_tokens")
    op.drop_index("ix_hokusai_api_keys_lineage", "hokusai_api_keys")
    with op.batch_alter_table("hokusai_api_keys") as batch:
        batch.drop_column("lineage")
