"""The outbox gains `aggregate_id` (the order a payment event is about), indexed and filled
from the envelopes already there, as every module's outbox does
(docs/decisions/0039-outbox-aggregate-column.md).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from app.bus.sql_tables_v2 import add_outbox_aggregate_id, drop_outbox_aggregate_id

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_outbox_aggregate_id()


def downgrade() -> None:
    drop_outbox_aggregate_id()
