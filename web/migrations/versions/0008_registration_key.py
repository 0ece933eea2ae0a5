"""accounts registration key (the hourly limit of registrations per client address)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 12:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("registration_key", sa.String(length=64), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_accounts_registration_key"), ["registration_key"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_accounts_registration_key"))
        batch_op.drop_column("registration_key")
