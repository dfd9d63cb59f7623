"""Bind each used token to the launch id that first redeemed it; one row per redemption.

A token may be redeemed again for the same launch id (the same instance
moving to another host, or re-attesting before a restart); ``launch_id``
says which launch that is. ``token_redemptions`` keeps the digest of each
redemption's TPMS_ATTEST so the very same certify evidence cannot be
redeemed twice. Rows redeemed before this revision get the launch id of
the attestation that redeemed them.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("used_tokens") as batch:
        batch.add_column(sa.Column("launch_id", sa.String(255)))
    op.execute(
        "UPDATE used_tokens SET launch_id = (SELECT attestations.launch_id FROM attestations"
        " WHERE attestations.id = used_tokens.attestation_id)")
    op.create_table(
        "token_redemptions",
        sa.Column("certify_digest", sa.String(64), primary_key=True),
        sa.Column("token_digest", sa.String(64), nullable=False),
        sa.Column("attestation_id", sa.String(36), nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_token_redemptions_token_digest", "token_redemptions",
                    ["token_digest"])
    op.create_index("ix_token_redemptions_expires_at", "token_redemptions", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_token_redemptions_expires_at", table_name="token_redemptions")
    op.drop_index("ix_token_redemptions_token_digest", table_name="token_redemptions")
    op.drop_table("token_redemptions")
    with op.batch_alter_table("used_tokens") as batch:
        batch.drop_column("launch_id")
