"""Continuous host attestation: single-use quote nonces and each host's current status.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "host_challenges",
        sa.Column("nonce_digest", sa.String(64), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("expires_at", sa.Double, nullable=False),
    )
    op.create_index("ix_host_challenges_host", "host_challenges", ["host"])
    op.create_table(
        "host_status",
        sa.Column("host", sa.String(255), primary_key=True),
        sa.Column("profile", sa.String(64)),
        sa.Column("check", sa.String(64)),
        sa.Column("reason", sa.Text),
        sa.Column("checked_at", sa.Double, nullable=False),
        sa.Column("ima_state", sa.Text),
        sa.Column("ima_offset", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("ima_failed", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("host_status")
    op.drop_index("ix_host_challenges_host", table_name="host_challenges")
    op.drop_table("host_challenges")
