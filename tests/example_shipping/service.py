"""Step 3. The domain logic: react to a paid order by scheduling its shipment."""

from __future__ import annotations

from datetime import datetime

import msgspec

from app.bus import Envelope, ModuleBus
from app.kernel.ids import new_id, utcnow
from tests.example_shipping.contracts import ShipmentScheduled
from tests.example_shipping.store import ShippingStore
from tests.example_shipping.views import PaidOrder


class Shipment(msgspec.Struct, frozen=True, kw_only=True):
    """The aggregate: its id and the sequence of its last event number its events."""

    id: str
    order_id: str
    user_id: str
    created_at: datetime
    event_sequence: int = 1


class ShippingService:
    def __init__(self, store: ShippingStore, bus: ModuleBus, carrier: str) -> None:
        self._store = store
        self._bus = bus
        self._carrier = carrier

    async def on_payment_succeeded(self, event: PaidOrder, envelope: Envelope) -> None:
        shipment = Shipment(
            id=new_id(), order_id=event.order_id, user_id=event.user_id, created_at=utcnow()
        )
        scheduled = ShipmentScheduled(
            shipment_id=shipment.id,
            order_id=shipment.order_id,
            user_id=shipment.user_id,
            carrier=self._carrier,
        )
        # Claim the event, write the shipment, add its event: one commit; the unit of work
        # hands the event to the relay once it is committed.
        async with self._store.unit_of_work(self._bus, cause=envelope) as work:
            if work.handled_before:
                return
            await self._store.schedule(
                work,
                shipment_id=shipment.id,
                order_id=shipment.order_id,
                user_id=shipment.user_id,
                at=shipment.created_at,
            )
            work.publish(shipment, [scheduled])

    async def for_order(self, order_id: str) -> list[dict[str, str]]:
        return await self._store.for_order(order_id)
