"""A revision counter of the profile set, so workers can cache profiles safely.

Every profile create, replace or delete increments ``profile_revision.revision``
in the same transaction; a worker reloads its cached profile set when the
counter differs from the one it loaded with (one cheap SELECT per request).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "profile_revision",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("revision", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(table, [{"id": 1, "revision": 0}])


def downgrade() -> None:
    op.drop_table("profile_revision")
