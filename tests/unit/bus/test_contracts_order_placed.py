"""OrderPlaced v2 (item_count), evolved the way docs/decisions/0026 says: a v1 envelope,
kept here for good (tests/fixtures/events/OrderPlaced.v1.json), is still charged by
payments, and orders publishes v2."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.bus.envelope import Envelope, decode, open_payload
from app.modules.orders.contracts import OrderPlaced
from app.modules.orders.order import Item, Order
from app.modules.payments.module import module as payments_module
from tests.support.scenario import Scenario, scenario

pytestmark = pytest.mark.anyio

V1 = Path(__file__).parents[2] / "fixtures" / "events" / "OrderPlaced.v1.json"


def v1_envelope() -> Envelope:
    return decode(V1.read_bytes())


@pytest.fixture
async def payments(anyio_backend: str) -> AsyncIterator[Scenario]:
    async with scenario(payments_module) as alone:
        yield alone


async def test_the_v1_fixture_is_a_v1_envelope_without_item_count() -> None:
    envelope = v1_envelope()

    assert (envelope.type, envelope.version) == ("OrderPlaced", 1)
    assert "item_count" not in envelope.payload


async def test_a_v1_order_placed_opens_as_v2_with_its_item_count_unknown() -> None:
    envelope = v1_envelope()

    placed = open_payload(envelope, OrderPlaced)

    assert placed == OrderPlaced(
        order_id=envelope.payload["order_id"],
        user_id=envelope.payload["user_id"],
        total=2697,
        currency="EUR",
        payment_token="tok_visa",
        item_count=None,
    )


async def test_payments_charges_an_order_placed_as_v1_once(payments: Scenario) -> None:
    envelope = v1_envelope()
    order_id = envelope.payload["order_id"]

    await payments.redeliver(envelope)
    await payments.redeliver(envelope)  # at least once: the same v1 event, again
    await payments.settle()

    [payment] = await payments.seams.all_pages("/api/payments", order_id=order_id)
    assert (payment["status"], payment["amount"], payment["attempts"]) == ("SUCCEEDED", 2697, 1)
    assert [e.type for e in payments.published] == ["PaymentSucceeded"]


async def test_orders_publishes_v2_saying_how_many_items_the_order_holds() -> None:
    _order, [placed] = Order.place(
        order_id="o1",
        user_id="u1",
        currency="EUR",
        payment_token="tok_visa",
        items=[Item("book", 2, 1250), Item("pen", 3, 199)],
        now=datetime(2026, 12, 1, tzinfo=UTC),
    )

    assert OrderPlaced.version == 2
    assert isinstance(placed, OrderPlaced) and placed.item_count == 5


async def test_a_v1_dead_letter_and_a_v1_event_parked_behind_it_complete_the_order_once(
    payments: Scenario,
) -> None:
    """Both were stored as v1 (the dead letter, the parked event) before the upgrade: after
    it, the replay reads them as v2 and the order is charged exactly once."""
    bus = payments.seams.runtime.bus
    envelope = v1_envelope()
    order_id = envelope.payload["order_id"]
    bus.break_handler("payments")
    await payments.redeliver(envelope)
    await payments.settle()
    await payments.redeliver(envelope)  # delivered again: parked behind its dead letter
    await payments.settle()
    [letter] = await bus.store.dead_letters(after=None, limit=10)
    assert [e.version for e in await bus.store.parked_for("payments", order_id)] == [1]
    assert letter.envelope.version == 1

    bus.mend_handler("payments")
    assert await bus.replay(letter.id) is not None
    await payments.settle()

    [payment] = await payments.seams.all_pages("/api/payments", order_id=order_id)
    assert (payment["status"], payment["amount"], payment["attempts"]) == ("SUCCEEDED", 2697, 1)
    assert [e.type for e in payments.published] == ["PaymentSucceeded"]
    assert await bus.store.parked_for("payments", order_id) == []
    assert await bus.store.dead_letters(after=None, limit=10) == []
