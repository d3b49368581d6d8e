"""What the code before OrderPlaced v2 left behind, for the tests of old envelopes
(issue 16, points 6 and 7): an order written by it, and its OrderPlaced as v1."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from app.bus import Envelope, Event
from app.kernel.ids import new_id, utcnow
from app.kernel.settings import Settings
from app.modules.orders.contracts import OrderCancelled, OrderPlaced
from app.modules.orders.order import Item, Order
from app.modules.orders.store import OrderStore, open_order_documents
from app.split.nats_transport import NatsTransport
from tests.support.work import HandedOff

ITEMS = (("book", 2, 1250), ("pen", 3, 199))
TOTAL = 2 * 1250 + 3 * 199  # what an order of ITEMS costs, in cents


def before_v2(envelope: Envelope) -> Envelope:
    """An OrderPlaced envelope as orders published it before v2: version 1, no item_count."""
    payload = {k: v for k, v in envelope.payload.items() if k != "item_count"}
    return msgspec.structs.replace(envelope, version=1, payload=payload)


class OrdersBeforeV2(HandedOff):
    """The orders module's bus as the code before OrderPlaced v2 had it: it wraps v1."""

    def __init__(self) -> None:
        super().__init__("orders", publishes=[OrderPlaced, OrderCancelled])

    def envelope(self, event: Event, *, aggregate_id: str, sequence: int) -> Envelope:
        return before_v2(super().envelope(event, aggregate_id=aggregate_id, sequence=sequence))


async def old_order(settings: Settings, user_id: str, *, in_outbox: bool) -> Envelope:
    """A PENDING order of ITEMS the code before v2 wrote in the orders store the settings
    name, and its OrderPlaced as v1: left in the order's outbox (`in_outbox`), or already
    published (the outbox emptied)."""
    order, events = Order.place(
        order_id=new_id(),
        user_id=user_id,
        currency="EUR",
        payment_token="tok_visa",
        items=[Item(*item) for item in ITEMS],
        now=utcnow(),
    )
    documents = open_order_documents(settings.store_url("orders"))
    await documents.open()
    try:
        bus = OrdersBeforeV2()
        async with OrderStore(documents).unit_of_work(bus) as work:
            work.save(order)
            if in_outbox:
                work.publish(order, events)
        if in_outbox:
            [placed] = bus.handed
        else:
            [placed] = bus.envelopes(events, aggregate_id=order.id, last_sequence=1)
    finally:
        await documents.close()
    assert (placed.version, "item_count" in placed.payload) == (1, False)
    return placed


async def publish_alone(bus_url: str, envelopes: Sequence[Envelope]) -> None:
    """Put envelopes in the JetStream stream as a process before the upgrade did, through a
    transport of its own that consumes nothing."""
    transport = NatsTransport(bus_url)
    await transport.start()
    try:
        for envelope in envelopes:
            await transport.publish(envelope)
    finally:
        await transport.stop()
