"""Operator consent for hosts, enrollment challenges per (host, AK), API tokens.

``host_registrations``: hosts an operator allowed to enroll, with the EK
certificate fingerprint they must present (or the one presented, awaiting
approval) and whether enrolling a new AK is approved. Hosts enrolled before
this revision are registered with the EK they enrolled with, so they keep
attesting; hosts left pending lose their challenge (enroll again once
registered).

``enrollment_challenges``: at most one live credential challenge per
(host, AK); an answer for one never cancels another. They replace the
single pending challenge kept in ``hosts``.

``api_tokens``: bearer tokens of operators and hosts, stored as SHA-256 only.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

import datetime

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_PENDING_COLUMNS = ("pending_ak_public", "pending_ak_name", "credential_digest",
                    "challenge_expires_at")


def upgrade() -> None:
    registrations = op.create_table(
        "host_registrations",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("ek_cert_fingerprint", sa.String(64)),
        sa.Column("pending_ek_fingerprint", sa.String(64)),
        sa.Column("enrollment_approved", sa.Boolean, nullable=False),
        sa.Column("failed_activations", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "enrollment_challenges",
        sa.Column("host", sa.String(255), primary_key=True),
        sa.Column("ak_name", sa.String(140), primary_key=True),
        sa.Column("ek_cert_fingerprint", sa.String(64), nullable=False),
        sa.Column("ek_public", sa.Text, nullable=False),
        sa.Column("ak_public", sa.Text, nullable=False),
        sa.Column("credential_digest", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("host", sa.String(255)),
        sa.Column("description", sa.String(255)),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    connection = op.get_bind()
    hosts = sa.table("hosts", sa.column("name", sa.String), sa.column("state", sa.String),
                     sa.column("ek_cert_fingerprint", sa.String))
    connection.execute(sa.delete(hosts).where(hosts.c.state != "active"))
    rows = connection.execute(sa.select(hosts.c.name, hosts.c.ek_cert_fingerprint)).all()
    if rows:
        stamp = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
        op.bulk_insert(registrations, [
            {"name": name, "ek_cert_fingerprint": fingerprint, "pending_ek_fingerprint": None,
             "enrollment_approved": False, "failed_activations": 0, "created_at": stamp,
             "updated_at": stamp} for name, fingerprint in rows])
    with op.batch_alter_table("hosts") as batch:
        for column in _PENDING_COLUMNS:
            batch.drop_column(column)


def downgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(sa.Column("pending_ak_public", sa.Text))
        batch.add_column(sa.Column("pending_ak_name", sa.String(140)))
        batch.add_column(sa.Column("credential_digest", sa.String(64)))
        batch.add_column(sa.Column("challenge_expires_at", sa.BigInteger))
    op.drop_table("api_tokens")
    op.drop_table("enrollment_challenges")
    op.drop_table("host_registrations")
