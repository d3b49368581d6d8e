"""The payments store as release 8e8cbb7 created it: payments, the processor's ledger, its
outbox and its inbox.

A store that release made holds these tables already and no version table: each is created
only where missing, and the store is then at 0001 (docs/decisions/0028-migrations.md).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from app.bus.sql_tables_v1 import create_inbox, create_outbox
from app.kernel.migrations import table_exists

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_inbox()
    create_outbox()
    _create_payments()
    _create_processor_ledger()


def _create_payments() -> None:
    if table_exists(op.get_bind(), "payments"):
        return
    op.create_table(
        "payments",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("order_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("token", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("failure_reason", sa.String(length=200), nullable=True),
        sa.Column("event_sequence", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("order_id"),
    )
    op.create_index("ix_payments_status", "payments", ["status"])


def _create_processor_ledger() -> None:
    if table_exists(op.get_bind(), "processor_ledger"):
        return
    op.create_table(
        "processor_ledger",
        sa.Column("order_id", sa.String(length=64), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("token", sa.String(length=100), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=True),
        sa.Column("reason", sa.String(length=100), nullable=True),
        sa.Column("refunded", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("order_id"),
    )


def downgrade() -> None:
    op.drop_table("processor_ledger")
    op.drop_table("payments")
    op.drop_table("outbox")
    op.drop_table("inbox")
