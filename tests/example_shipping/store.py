"""Step 2. Its private store: its own database, its own tables, an outbox and an inbox."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from app.bus.sql_outbox import inbox_table, outbox_table
from app.bus.sql_store import SqlModuleStore, SqlUnitOfWork
from app.kernel.sql import UtcDateTime

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


class ShippingStore(SqlModuleStore):
    def __init__(self, url: str) -> None:
        super().__init__(url, metadata, outbox=outbox, inbox=inbox)

    async def schedule(
        self, work: SqlUnitOfWork, *, shipment_id: str, order_id: str, user_id: str, at: datetime
    ) -> None:
        """The shipment, in the unit of work that claimed its cause and holds its event."""
        await work.connection.execute(
            shipments.insert().values(
                id=shipment_id, order_id=order_id, user_id=user_id, created_at=at
            )
        )

    async def for_order(self, order_id: str) -> list[dict[str, str]]:
        async with self.reading() as connection:
            rows = await connection.execute(
                sa.select(shipments.c.id, shipments.c.order_id, shipments.c.user_id).where(
                    shipments.c.order_id == order_id
                )
            )
            return [dict(row) for row in rows.mappings()]
