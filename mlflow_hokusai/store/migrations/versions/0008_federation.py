"""Keyless CI: federation policies (which workload OIDC tokens may be exchanged for a
short-lived key, acting as whom) and, on keys, the policy a key was exchanged under.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "hokusai_federation_policies",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("issuer", sa.String(512), nullable=False),
        sa.Column("audience", sa.String(255), nullable=False),
        sa.Column("subject", sa.String(512), nullable=False),
        sa.Column("claims", sa.Text(), nullable=False),
        sa.Column("username", sa.String(255), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("lifetime_seconds", sa.Integer(), nullable=False),
        sa.Column("rate_limit", sa.String(32), nullable=True),
        sa.Column("allowed_ips", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
    )
    op.create_index(
        "ix_hokusai_federation_policies_issuer", "hokusai_federation_policies", ["issuer"]
    )
    with op.batch_alter_table("hokusai_api_keys") as batch:
        batch.add_column(sa.Column("federated_by", sa.String(32), nullable=True))


def downgrade():
    with op.batch_alter_table("hokusai_api_keys") as batch:
        batch.drop_column("federated_by")
    op.drop_table("hokusai_federation_policies")
