"""quota counters (one shared hourly limit per client address or e-mail); the addresses'
hashes kept on accounts and tickets for the old limits go

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 16:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "quota_uses",
        sa.Column("key", sa.String(length=120), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", "window_start", name=op.f("pk_quota_uses")),
    )
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_accounts_registration_key"))
        batch_op.drop_column("registration_key")
    with op.batch_alter_table("helpdesk_tickets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_helpdesk_tickets_client_key"))
        batch_op.drop_column("client_key")


def downgrade() -> None:
    with op.batch_alter_table("helpdesk_tickets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("client_key", sa.String(length=64), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_helpdesk_tickets_client_key"), ["client_key"], unique=False
        )
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("registration_key", sa.String(length=64), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_accounts_registration_key"), ["registration_key"], unique=False
        )
    op.drop_table("quota_uses")
