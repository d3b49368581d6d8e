"""Users' keys: one per user, sealing what events say of them, erased with the user
(docs/decisions/0030-crypto-shredding.md). Every user already stored is given one.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from app.kernel.sealing import KEY_BYTES, new_key

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    user_keys = op.create_table(
        "user_keys",
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("key", sa.LargeBinary(length=KEY_BYTES), nullable=False),
        sa.PrimaryKeyConstraint("user_id"),
    )
    users = op.get_bind().execute(sa.text("SELECT id FROM users")).scalars().all()
    if users:
        op.bulk_insert(user_keys, [{"user_id": user_id, "key": new_key()} for user_id in users])


def downgrade() -> None:
    op.drop_table("user_keys")
