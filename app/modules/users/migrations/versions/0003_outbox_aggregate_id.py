"""The outbox gains `aggregate_id`, indexed and filled from the envelopes already there, so a
user's deletion finds the delivered rows about them by the index instead of decoding every
delivered envelope (docs/decisions/0039-outbox-aggregate-column.md).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from app.bus.sql_tables_v2 import add_outbox_aggregate_id, drop_outbox_aggregate_id

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_outbox_aggregate_id()


def downgrade() -> None:
    drop_outbox_aggregate_id()
