"""OrderStore, the one mapping between an Order and its document, written through its unit
of work: on every document adapter an order reads back exactly as it was written, a save
writes only what changed (with its events and the id of the event it applied), a stale save
writes nothing, and the events reach the relay only once their write landed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from app.bus.envelope import Envelope, wrap
from app.modules.orders.contracts import OrderCancelled, OrderPlaced
from app.modules.orders.order import Item, Order, OrderEvent, OrderStatus
from app.modules.orders.store import OrderStore, StoredOrder, open_order_documents
from tests.support.work import HandedOff

pytestmark = pytest.mark.anyio

PLACED_AT = datetime(2025, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)
LATER = PLACED_AT + timedelta(seconds=1)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite:///:memory:", "mongomock://localhost/order_store"])
async def orders(request: pytest.FixtureRequest) -> AsyncIterator[OrderStore]:
    documents = open_order_documents(request.param)
    await documents.open()
    yield OrderStore(documents)
    await documents.close()


@pytest.fixture
def bus() -> HandedOff:
    return HandedOff("orders", publishes=(OrderPlaced, OrderCancelled))


def placed(order_id: str = "order-1") -> tuple[Order, list[OrderEvent]]:
    return Order.place(
        order_id=order_id,
        user_id="user-1",
        currency="EUR",
        payment_token="tok_visa",
        items=[Item("book", 2, 1250), Item("pen", 1, 199)],
        now=PLACED_AT,
    )


async def insert(orders: OrderStore, bus: HandedOff, order_id: str = "order-1") -> Order:
    order, events = placed(order_id)
    async with orders.unit_of_work(bus) as work:
        work.save(order)
        work.publish(order, events)
    assert work.committed
    return order


async def save(
    orders: OrderStore,
    bus: HandedOff,
    stored: StoredOrder,
    changed: Order,
    cause: Envelope | None = None,
) -> bool:
    async with orders.unit_of_work(bus, stored=stored, cause=cause) as work:
        work.save(changed)
    return work.committed


def payment_event(event_id: str) -> Envelope:
    """An envelope as the payments module would send it; only its id matters here."""
    envelope = wrap(
        OrderCancelled(order_id="order-1", user_id="user-1", status_when_cancelled="PAID"),
        producer="payments",
        aggregate_id="payment-1",
        sequence=1,
        correlation_id="c",
        causation_id=None,
    )
    return msgspec.structs.replace(envelope, id=event_id)


async def test_an_order_reads_back_exactly_as_it_was_placed(
    orders: OrderStore, bus: HandedOff
) -> None:
    order = await insert(orders, bus)
    stored = await orders.get("order-1")

    assert stored is not None
    assert stored.order == order
    assert stored.order.created_at == PLACED_AT  # to the microsecond, in UTC
    assert stored.handled == []
    assert [e.type for e in bus.handed] == ["OrderPlaced"]
    assert await orders.outbox.pending(10) == bus.handed


async def test_a_save_writes_the_change_and_the_applied_event_once(
    orders: OrderStore, bus: HandedOff
) -> None:
    await insert(orders, bus)
    stored = await orders.get("order-1")
    assert stored is not None
    paid, _ = stored.order.pay(LATER)

    assert await save(orders, bus, stored, paid, payment_event("payment-event-1"))
    again = await orders.get("order-1")

    assert again is not None
    assert again.order == paid
    assert again.order.status == OrderStatus.PAID
    assert again.handled == ["payment-event-1"]
    async with orders.unit_of_work(
        bus, stored=again, cause=payment_event("payment-event-1")
    ) as work:
        assert work.handled_before  # a redelivery of the applied event changes nothing
        work.save(again.order.cancel(LATER)[0])
    assert not work.committed


async def test_a_save_from_a_stale_read_writes_nothing_and_hands_nothing_off(
    orders: OrderStore, bus: HandedOff
) -> None:
    await insert(orders, bus)
    stale = await orders.get("order-1")
    assert stale is not None
    assert await save(orders, bus, stale, stale.order.pay(LATER)[0])
    cancelled, events = stale.order.cancel(LATER)
    handed_before = list(bus.handed)

    async with orders.unit_of_work(bus, stored=stale) as work:
        work.save(cancelled)
        work.publish(cancelled, events)

    assert not work.committed
    assert bus.handed == handed_before
    now = await orders.get("order-1")
    assert now is not None
    assert now.order.status == OrderStatus.PAID
    assert [e.type for e in await orders.outbox.pending(10)] == ["OrderPlaced"]


async def test_a_cancelled_unit_of_work_writes_nothing(orders: OrderStore, bus: HandedOff) -> None:
    order, events = placed()
    async with orders.unit_of_work(bus) as work:
        work.save(order)
        work.publish(order, events)
        work.cancel()

    assert not work.committed
    assert bus.handed == []
    assert await orders.get("order-1") is None


async def test_pages_hold_orders_filtered_by_status(orders: OrderStore, bus: HandedOff) -> None:
    for order_id in ("order-1", "order-2"):
        await insert(orders, bus, order_id)
    stored = await orders.get("order-2")
    assert stored is not None
    await save(orders, bus, stored, stored.order.pay(LATER)[0])

    paid = await orders.page(user_id="user-1", status=OrderStatus.PAID, after=None, limit=10)
    every = await orders.page(user_id=None, status=None, after=None, limit=10)

    assert [order.id for order in paid] == ["order-2"]
    assert [order.id for order in every] == ["order-1", "order-2"]
    assert msgspec.structs.asdict(every[0])["items"] == (Item("book", 2, 1250), Item("pen", 1, 199))


async def test_delivered_events_leave_the_outbox(orders: OrderStore, bus: HandedOff) -> None:
    await insert(orders, bus)

    await orders.outbox.mark_delivered(bus.handed)

    assert await orders.outbox.pending(10) == []
