"""Initial TTP schema: hosts, profiles, attestations, used_tokens.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hosts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("ek_cert_fingerprint", sa.String(64), nullable=False),
        sa.Column("ek_public", sa.Text, nullable=False),
        sa.Column("ak_public", sa.Text),
        sa.Column("ak_name", sa.String(140)),
        sa.Column("pending_ak_public", sa.Text),
        sa.Column("pending_ak_name", sa.String(140)),
        sa.Column("credential_digest", sa.String(64)),
        sa.Column("challenge_expires_at", sa.BigInteger),
        sa.Column("created_at", sa.DateTime),
        sa.Column("updated_at", sa.DateTime),
        sa.Column("activated_at", sa.DateTime),
        sa.UniqueConstraint("name", name="uq_hosts_name"),
    )
    op.create_table(
        "profiles",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("level", sa.Integer, nullable=False),
        sa.Column("document", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime),
    )
    op.create_table(
        "attestations",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("created_at", sa.DateTime),
        sa.Column("requester", sa.String(255), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("launch_id", sa.String(255), nullable=False),
        sa.Column("requested_profile", sa.String(64)),
        sa.Column("satisfied_profile", sa.String(64)),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("check", sa.String(64)),
        sa.Column("reason", sa.Text),
        sa.Column("evidence_digests", sa.Text, nullable=False),
    )
    op.create_index("ix_attestations_host", "attestations", ["host"])
    op.create_table(
        "used_tokens",
        sa.Column("token_digest", sa.String(64), primary_key=True),
        sa.Column("attestation_id", sa.String(36), nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_used_tokens_expires_at", "used_tokens", ["expires_at"])


def downgrade() -> None:
    op.drop_table("used_tokens")
    op.drop_index("ix_attestations_host", table_name="attestations")
    op.drop_table("attestations")
    op.drop_table("profiles")
    op.drop_table("hosts")
