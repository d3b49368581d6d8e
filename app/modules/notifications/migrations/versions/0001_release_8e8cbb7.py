"""The notifications store as release 8e8cbb7 created it: contacts, notifications and its
inbox.

A store that release made holds these tables already and no version table: each is created
only where missing, and the store is then at 0001 (docs/decisions/0028-migrations.md).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from app.bus.sql_tables_v1 import create_inbox
from app.kernel.migrations import table_exists

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_inbox()
    _create_contacts()
    _create_notifications()


def _create_contacts() -> None:
    if table_exists(op.get_bind(), "contacts"):
        return
    op.create_table(
        "contacts",
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("user_id"),
    )


def _create_notifications() -> None:
    if table_exists(op.get_bind(), "notifications"):
        return
    op.create_table(
        "notifications",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("order_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("to", sa.String(length=254), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("order_id", "kind", name="uq_notifications_order_kind"),
    )
    op.create_index("ix_notifications_order", "notifications", ["order_id", "id"])
    op.create_index("ix_notifications_user", "notifications", ["user_id", "id"])


def downgrade() -> None:
    op.drop_table("notifications")
    op.drop_table("contacts")
    op.drop_table("inbox")
