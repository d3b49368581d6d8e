"""Step 3. The domain logic: react to a paid order by scheduling its shipment."""

from __future__ import annotations

from app.bus import Envelope, ModuleBus
from app.kernel.ids import new_id, utcnow
from app.modules.payments.contracts import PaymentSucceeded
from tests.example_shipping.contracts import ShipmentScheduled
from tests.example_shipping.store import ShippingStore


class ShippingService:
    def __init__(self, store: ShippingStore, bus: ModuleBus, carrier: str) -> None:
        self._store = store
        self._bus = bus
        self._carrier = carrier

    async def on_payment_succeeded(self, event: PaymentSucceeded, envelope: Envelope) -> None:
        shipment_id = new_id()
        scheduled = self._bus.envelope(
            ShipmentScheduled(
                shipment_id=shipment_id,
                order_id=event.order_id,
                user_id=event.user_id,
                carrier=self._carrier,
            ),
            aggregate_id=shipment_id,
            sequence=1,
        )
        shipment = {
            "id": shipment_id,
            "order_id": event.order_id,
            "user_id": event.user_id,
            "created_at": utcnow(),
        }
        if await self._store.schedule(shipment, envelope, [scheduled]):
            self._bus.committed([scheduled])

    async def for_order(self, order_id: str) -> list[dict[str, str]]:
        return await self._store.for_order(order_id)
