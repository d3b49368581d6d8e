"""The bus's tables in a SQL module's database as revision 1 of every module created them
(the outbox, the inbox, the idempotency keys: the schema of release 8e8cbb7).

Frozen: the revisions that call these must create the same tables forever. A change to a
table in app/bus/sql_outbox.py or app/bus/sql_store.py is a new revision in each module
that holds it (docs/decisions/0028-migrations.md), never an edit here.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from app.kernel.migrations import table_exists


def create_outbox() -> None:
    if table_exists(op.get_bind(), "outbox"):
        return
    op.create_table(
        "outbox",
        sa.Column(
            "position",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("envelope", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("position"),
        sa.UniqueConstraint("id"),
    )
    op.create_index("ix_outbox_undelivered", "outbox", ["delivered_at", "position"])


def create_inbox() -> None:
    if table_exists(op.get_bind(), "inbox"):
        return
    op.create_table(
        "inbox",
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id"),
    )


def create_idempotency_keys() -> None:
    if table_exists(op.get_bind(), "idempotency_keys"):
        return
    op.create_table(
        "idempotency_keys",
        sa.Column("scope", sa.String(length=100), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("scope", "key"),
    )
