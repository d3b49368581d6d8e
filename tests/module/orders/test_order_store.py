"""OrderStore, the one mapping between an Order and its document: on every document adapter
an order reads back exactly as it was written, a save writes only what changed (with its
events and the id of the event it applied), and a stale save writes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from app.bus.envelope import Envelope, wrap
from app.modules.orders.order import Item, Order, OrderStatus
from app.modules.orders.store import OrderStore, open_order_documents

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


def placed(order_id: str = "order-1") -> tuple[Order, list[Envelope]]:
    order, events = Order.place(
        order_id=order_id,
        user_id="user-1",
        currency="EUR",
        payment_token="tok_visa",
        items=[Item("book", 2, 1250), Item("pen", 1, 199)],
        now=PLACED_AT,
    )
    envelopes = [
        wrap(event, producer="orders", aggregate_id=order.id, sequence=1, correlation_id="c",
             causation_id=None)
        for event in events
    ]  # fmt: skip
    return order, envelopes


async def test_an_order_reads_back_exactly_as_it_was_placed(orders: OrderStore) -> None:
    order, envelopes = placed()

    await orders.insert(order, envelopes)
    stored = await orders.get("order-1")

    assert stored is not None
    assert stored.order == order
    assert stored.order.created_at == PLACED_AT  # to the microsecond, in UTC
    assert stored.handled == []
    assert await orders.pending(10) == envelopes


async def test_a_save_writes_the_change_and_the_applied_event_once(orders: OrderStore) -> None:
    order, envelopes = placed()
    await orders.insert(order, envelopes)
    stored = await orders.get("order-1")
    assert stored is not None
    paid, _ = stored.order.pay(LATER)

    assert await orders.save(stored, paid, [], handled="payment-event-1")
    again = await orders.get("order-1")

    assert again is not None
    assert again.order == paid
    assert again.order.status == OrderStatus.PAID
    assert again.handled == ["payment-event-1"]


async def test_a_save_from_a_stale_read_writes_nothing(orders: OrderStore) -> None:
    order, envelopes = placed()
    await orders.insert(order, envelopes)
    stale = await orders.get("order-1")
    assert stale is not None
    assert await orders.save(stale, stale.order.pay(LATER)[0], [])

    cancelled, _ = stale.order.cancel(LATER)

    assert not await orders.save(stale, cancelled, [])
    now = await orders.get("order-1")
    assert now is not None
    assert now.order.status == OrderStatus.PAID


async def test_pages_hold_orders_filtered_by_status(orders: OrderStore) -> None:
    for order_id in ("order-1", "order-2"):
        order, envelopes = placed(order_id)
        await orders.insert(order, envelopes)
    stored = await orders.get("order-2")
    assert stored is not None
    await orders.save(stored, stored.order.pay(LATER)[0], [])

    paid = await orders.page(user_id="user-1", status=OrderStatus.PAID, after=None, limit=10)
    every = await orders.page(user_id=None, status=None, after=None, limit=10)

    assert [order.id for order in paid] == ["order-2"]
    assert [order.id for order in every] == ["order-1", "order-2"]
    assert msgspec.structs.asdict(every[0])["items"] == (Item("book", 2, 1250), Item("pen", 1, 199))


async def test_delivered_events_leave_the_outbox(orders: OrderStore) -> None:
    order, envelopes = placed()
    await orders.insert(order, envelopes)

    await orders.mark_delivered(envelopes)

    assert await orders.pending(10) == []
