"""The users store as release 8e8cbb7 created it: users, its outbox, its idempotency keys.

A store that release made holds these tables already and no version table: each is created
only where missing, and the store is then at 0001 (docs/decisions/0028-migrations.md).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from app.bus.sql_tables_v1 import create_idempotency_keys, create_outbox
from app.kernel.migrations import table_exists

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_idempotency_keys()
    create_outbox()
    if table_exists(op.get_bind(), "users"):
        return
    op.create_table(
        "users",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("email_key", sa.String(length=254), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=10), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("event_sequence", sa.Integer(), nullable=False),
        sa.Column("token_generation", sa.Integer(), server_default="1", nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("email_key"),
    )


def downgrade() -> None:
    op.drop_table("users")
    op.drop_table("outbox")
    op.drop_table("idempotency_keys")
