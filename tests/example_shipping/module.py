"""Step 5. The module spec: name, what it publishes and consumes, its store, its assembly,
its settings section (APP_SHIPPING_CARRIER; its store is APP_SHIPPING_DB_URL by its name)."""

from __future__ import annotations

import msgspec
from litestar.di import Provide

from app.modules.payments.contracts import PaymentSucceeded
from app.modules.spec import Assembly, Module, ModuleContext
from tests.example_shipping.api import ShippingController
from tests.example_shipping.contracts import ShipmentScheduled
from tests.example_shipping.service import ShippingService
from tests.example_shipping.store import ShippingStore
from tests.example_shipping.views import PaidOrder


class ShippingSettings(msgspec.Struct, frozen=True, kw_only=True):
    shipping_carrier: str = "post"  # who ships: APP_SHIPPING_CARRIER


def assemble(context: ModuleContext) -> Assembly:
    store: ShippingStore = context.store
    settings: ShippingSettings = context.section
    service = ShippingService(store, context.bus, settings.shipping_carrier)
    return Assembly(
        route_handlers=[ShippingController],
        dependencies={"shipping": Provide(lambda: service, use_cache=True, sync_to_thread=False)},
        handlers={PaidOrder: service.on_payment_succeeded},
        outbox=store.outbox,
    )


module = Module(
    name="shipping",
    description="Schedules the shipment of every paid order.",
    publishes=(ShipmentScheduled,),
    subscribes=(PaymentSucceeded,),
    reads=(PaidOrder,),
    open_store=ShippingStore,
    assemble=assemble,
    package="tests.example_shipping",
    settings=ShippingSettings,
)
