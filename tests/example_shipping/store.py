"""Step 2. Its private store: its own database, its own tables, an outbox and an inbox."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from app.bus import Envelope
from app.bus.sql_outbox import SqlOutbox, add_to_outbox, claim_in_inbox, inbox_table, outbox_table
from app.kernel.sql import SqlDatabase, UtcDateTime

metadata = sa.MetaData()
shipments = sa.Table(
    "shipments",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("order_id", sa.String(64), nullable=False, unique=True),
    sa.Column("user_id", sa.String(64), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
)
outbox = outbox_table(metadata)
inbox = inbox_table(metadata)


class ShippingStore(SqlDatabase):
    def __init__(self, url: str) -> None:
        super().__init__(url, metadata)
        self.outbox = SqlOutbox(self, outbox)

    async def schedule(
        self, shipment: dict[str, str | datetime], cause: Envelope, events: list[Envelope]
    ) -> bool:
        """The shipment, its event and the handled id in one transaction; False if seen."""
        async with self.transaction() as connection:
            if not await claim_in_inbox(connection, inbox, cause):
                return False
            await connection.execute(shipments.insert().values(**shipment))
            await add_to_outbox(connection, outbox, events)
        return True

    async def for_order(self, order_id: str) -> list[dict[str, str]]:
        async with self.reading() as connection:
            rows = await connection.execute(
                sa.select(shipments.c.id, shipments.c.order_id, shipments.c.user_id).where(
                    shipments.c.order_id == order_id
                )
            )
            return [dict(row) for row in rows.mappings()]
