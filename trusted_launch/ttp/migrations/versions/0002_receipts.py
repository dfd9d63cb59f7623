"""Signed launch receipts, found by token digest and fetched with a proof of N.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "receipts",
        sa.Column("attestation_id", sa.String(36), primary_key=True),
        sa.Column("token_digest", sa.String(64)),
        sa.Column("receipt_auth", sa.String(64)),
        sa.Column("document", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime().with_variant(
            mysql.DATETIME(fsp=6), "mysql", "mariadb")),
    )
    op.create_index("ix_receipts_token_digest", "receipts", ["token_digest"])


def downgrade() -> None:
    op.drop_index("ix_receipts_token_digest", table_name="receipts")
    op.drop_table("receipts")
