"""Step 5. The module spec: name, what it publishes and consumes, its store, its assembly."""

from __future__ import annotations

from litestar.di import Provide

from app.modules.payments.contracts import PaymentSucceeded
from app.modules.spec import Assembly, Module, ModuleContext
from tests.example_shipping.api import ShippingController
from tests.example_shipping.contracts import ShipmentScheduled
from tests.example_shipping.service import ShippingService
from tests.example_shipping.store import ShippingStore


def assemble(context: ModuleContext) -> Assembly:
    store: ShippingStore = context.store
    service = ShippingService(store, context.bus)
    return Assembly(
        route_handlers=[ShippingController],
        dependencies={"shipping": Provide(lambda: service, use_cache=True, sync_to_thread=False)},
        handlers={PaymentSucceeded: service.on_payment_succeeded},
        outbox=store.outbox,
    )


module = Module(
    name="shipping",
    description="Schedules the shipment of every paid order.",
    publishes=(ShipmentScheduled,),
    subscribes=(PaymentSucceeded,),
    open_store=ShippingStore,
    assemble=assemble,
    package="tests.example_shipping",
)
