"""Browser sessions of people signed in through the OpenID provider, sign-ins under way, and
the MLflow roles sign-in granted by group.

- ``hokusai_sessions``: one row per session, found by the digest of the id the cookie carries
  (the id itself is never stored), with its user, times, and where it was opened from;
- ``hokusai_sign_in_attempts``: a sign-in between the redirect to the provider and its
  callback, found by the digest of its ``state`` and deleted by the callback that uses it;
- ``hokusai_group_role_grants``: which role assignments sign-in made (``oidc_group_roles``), so
  it removes only those when a person leaves the group.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "hokusai_sessions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("username", sa.String(255), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.Column("source", sa.String(255), nullable=True),
        sa.Column("user_agent", sa.String(255), nullable=True),
    )
    op.create_index("ix_hokusai_sessions_digest", "hokusai_sessions", ["digest"], unique=True)
    op.create_index("ix_hokusai_sessions_username", "hokusai_sessions", ["username"])
    op.create_index("ix_hokusai_sessions_expires_at", "hokusai_sessions", ["expires_at"])
    op.create_table(
        "hokusai_sign_in_attempts",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("nonce", sa.String(128), nullable=False),
        sa.Column("code_verifier", sa.String(128), nullable=False),
        sa.Column("next_path", sa.String(2048), nullable=False),
        sa.Column("base", sa.String(255), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
    )
    op.create_index(
        "ix_hokusai_sign_in_attempts_expires_at", "hokusai_sign_in_attempts", ["expires_at"]
    )
    op.create_table(
        "hokusai_group_role_grants",
        sa.Column("user_id", sa.Integer(), primary_key=True),
        sa.Column("role_id", sa.Integer(), primary_key=True),
        sa.Column("granted_at", sa.DateTime(), nullable=False),
    )


def downgrade():
    op.drop_table("hokusai_group_role_grants")
    op.drop_index("ix_hokusai_sign_in_attempts_expires_at", "hokusai_sign_in_attempts")
    op.drop_table("hokusai_sign_in_attempts")
    op.drop_index("ix_hokusai_sessions_expires_at", "hokusai_sessions")
    op.drop_index("ix_hokusai_sessions_username", "hokusai_sessions")
    op.drop_index("ix_hokusai_sessions_digest", "hokusai_sessions")
    op.drop_table("hokusai_sessions")
