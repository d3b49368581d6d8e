"""The orders module booted alone behind the gateway (on each of its document adapters), fed
the users' and payments' events as they would publish them, with everything it publishes
recorded (docs/decisions/0005-order-input.md, 0006-replica-wait.md, 0008-cancel.md)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from httpx import Response

from app.bus import Envelope, Event
from app.bus.envelope import wrap
from app.kernel.ids import new_id
from app.modules.orders.documents import OrderDocuments
from app.modules.orders.module import module as orders_module
from app.modules.payments.contracts import PaymentFailed, PaymentRefunded, PaymentSucceeded
from app.modules.users.contracts import UserRegistered
from tests.support.scenario import Scenario, scenario

pytestmark = pytest.mark.anyio

ADAPTERS = {
    "sqlite": {},
    "mongomock": {"orders_db_url": "mongomock://localhost/orders_alone"},
}


class Orders:
    """The orders module alone, with what it published recorded in order."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.seams = scenario.seams

    @property
    def store(self) -> OrderDocuments:
        store: OrderDocuments = self.scenario.store
        return store

    def published(self, order_id: str) -> list[Envelope]:
        return [e for e in self.scenario.published if e.aggregate_id == order_id]

    def types(self, order_id: str) -> list[str]:
        return [e.type for e in self.published(order_id)]

    async def deliver(self, *envelopes: Envelope) -> None:
        for envelope in envelopes:
            await self.scenario.redeliver(envelope)
        await self.seams.settle()

    async def user(self) -> str:
        user_id = new_id()
        await self.deliver(registered(user_id))
        return user_id

    async def post(self, user_id: str, **changes: Any) -> Response:
        return await self.seams.client.post(
            "/api/orders",
            json={**an_order(user_id), **changes},
            headers=self.seams.headers_for(user_id),
        )

    async def place(self, user_id: str, **changes: Any) -> dict[str, Any]:
        response = await self.post(user_id, **changes)
        assert response.status_code == 201, response.text
        await self.seams.settle()
        order: dict[str, Any] = response.json()
        return order

    async def read(self, order_id: str) -> dict[str, Any]:
        order: dict[str, Any] = await self.seams.get(f"/api/orders/{order_id}")
        return order

    async def cancel(self, order_id: str) -> Response:
        response = await self.seams.client.post(f"/api/orders/{order_id}/cancel")
        await self.seams.settle()
        return response


@asynccontextmanager
async def orders_alone(adapter: str = "sqlite", **settings: str) -> AsyncIterator[Orders]:
    async with scenario(orders_module, **ADAPTERS[adapter], **settings) as alone:
        yield Orders(alone)


@pytest.fixture(params=list(ADAPTERS))
async def orders(request: pytest.FixtureRequest, anyio_backend: str) -> AsyncIterator[Orders]:
    async with orders_alone(request.param) as orders:
        yield orders


def envelope(event: Event, *, producer: str, aggregate_id: str, sequence: int = 1) -> Envelope:
    return wrap(
        event,
        producer=producer,
        aggregate_id=aggregate_id,
        sequence=sequence,
        correlation_id="c",
        causation_id=None,
    )


def registered(user_id: str) -> Envelope:
    event = UserRegistered(
        user_id=user_id, name="Ada", email="ada@example.com", registered_at="2025-01-01T00:00:00Z"
    )
    return envelope(event, producer="users", aggregate_id=user_id)


def payment(kind: type[Event], order: dict[str, Any], sequence: int = 1) -> Envelope:
    fields: dict[str, Any] = {
        "payment_id": f"pay-{order['id']}",
        "order_id": order["id"],
        "user_id": order["user_id"],
        "amount": order["total"],
        "currency": order["currency"],
    }
    if kind is PaymentFailed:
        fields["reason"] = "card_declined"
    return envelope(
        kind(**fields), producer="payments", aggregate_id=fields["payment_id"], sequence=sequence
    )


def an_order(user_id: str) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "currency": "EUR",
        "payment_token": "tok_visa",
        "items": [{"sku": "book", "quantity": 2, "unit_price": 1250}],
    }


# Placing.


async def test_the_server_computes_the_total_from_the_lines(orders: Orders) -> None:
    user_id = await orders.user()
    lines = [
        {"sku": "book", "quantity": 2, "unit_price": 1250},
        {"sku": "pen", "quantity": 3, "unit_price": 199},
        {"sku": "car", "quantity": 1000, "unit_price": 100_000_000},
    ]

    order = await orders.place(user_id, items=lines)

    assert order["total"] == 2 * 1250 + 3 * 199 + 1000 * 100_000_000
    assert (order["status"], order["cancel_requested"]) == ("PENDING", False)
    assert order["items"] == lines
    assert orders.types(order["id"]) == ["OrderPlaced"]
    [placed] = orders.published(order["id"])
    assert (placed.payload["total"], placed.sequence) == (order["total"], 1)


async def test_a_total_sent_by_the_client_is_refused(orders: Orders) -> None:
    user_id = await orders.user()

    response = await orders.post(user_id, total=1)

    assert response.status_code == 400
    assert await orders.seams.all_pages("/api/orders", user_id=user_id) == []


async def test_an_order_for_a_user_the_replica_lacks_is_a_409_with_retry_after(
    anyio_backend: str,
) -> None:
    async with orders_alone(replica_wait_seconds="0.1") as orders:
        stranger = new_id()

        response = await orders.post(stranger)

        assert response.status_code == 409
        assert response.headers["retry-after"] == "1"
        assert response.headers["content-type"].startswith("application/problem+json")
        assert await orders.seams.all_pages("/api/orders") == []
        assert orders.scenario.published == []


async def test_an_order_waiting_for_its_user_succeeds_when_the_user_arrives(
    anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with orders_alone(replica_wait_seconds="5") as orders:
        user_id = new_id()
        missed = asyncio.Event()
        knows_user = orders.store.knows_user

        async def watched(asked: str) -> bool:
            known = await knows_user(asked)
            if not known:
                missed.set()
            return known

        monkeypatch.setattr(orders.store, "knows_user", watched)
        request = asyncio.create_task(orders.post(user_id))
        await asyncio.wait_for(missed.wait(), 5)

        await orders.seams.runtime.bus.transport.publish(registered(user_id))
        response = await asyncio.wait_for(request, 5)

        assert response.status_code == 201, response.text
        assert response.json()["user_id"] == user_id


# Cancelling (docs/decisions/0008-cancel.md).


async def test_cancelling_a_pending_order_cancels_it_at_once(orders: Orders) -> None:
    order = await orders.place(await orders.user())

    response = await orders.cancel(order["id"])

    assert response.status_code == 200
    assert response.json()["status"] == "CANCELLED"
    assert (await orders.read(order["id"]))["status"] == "CANCELLED"
    assert orders.types(order["id"]) == ["OrderPlaced", "OrderCancelled"]
    cancelled = orders.published(order["id"])[-1]
    assert cancelled.payload["status_when_cancelled"] == "PENDING"
    assert cancelled.sequence == 2


async def test_cancelling_a_paid_order_waits_for_the_refund(orders: Orders) -> None:
    order = await orders.place(await orders.user())
    await orders.deliver(payment(PaymentSucceeded, order))
    assert (await orders.read(order["id"]))["status"] == "PAID"

    first = await orders.cancel(order["id"])
    second = await orders.cancel(order["id"])

    assert first.status_code == 202
    assert (first.json()["status"], first.json()["cancel_requested"]) == ("PAID", True)
    assert second.status_code == 202
    assert (second.json()["status"], second.json()["cancel_requested"]) == ("PAID", True)
    assert orders.types(order["id"]) == ["OrderPlaced", "OrderCancelled"]
    assert orders.published(order["id"])[-1].payload["status_when_cancelled"] == "PAID"

    await orders.deliver(payment(PaymentRefunded, order, sequence=2))

    assert (await orders.read(order["id"]))["status"] == "REFUNDED"
    final = await orders.cancel(order["id"])
    assert final.status_code == 409
    assert final.headers["content-type"].startswith("application/problem+json")
    assert "REFUNDED" in final.json()["detail"]


async def test_concurrent_cancels_of_a_paid_order_publish_one_order_cancelled(
    orders: Orders,
) -> None:
    order = await orders.place(await orders.user())
    await orders.deliver(payment(PaymentSucceeded, order))

    answers = await asyncio.gather(*(orders.cancel(order["id"]) for _ in range(4)))

    assert [answer.status_code for answer in answers] == [202] * 4
    assert orders.types(order["id"]) == ["OrderPlaced", "OrderCancelled"]


async def test_concurrent_cancels_of_a_pending_order_cancel_it_once(orders: Orders) -> None:
    order = await orders.place(await orders.user())

    answers = await asyncio.gather(*(orders.cancel(order["id"]) for _ in range(4)))

    assert sorted(answer.status_code for answer in answers) == [200, 409, 409, 409]
    assert orders.types(order["id"]) == ["OrderPlaced", "OrderCancelled"]


async def test_cancelling_a_cancelled_order_is_a_409_naming_its_status(orders: Orders) -> None:
    order = await orders.place(await orders.user())
    await orders.cancel(order["id"])

    response = await orders.cancel(order["id"])

    assert response.status_code == 409
    assert "CANCELLED" in response.json()["detail"]
    assert orders.types(order["id"]) == ["OrderPlaced", "OrderCancelled"]


async def test_cancelling_an_unknown_order_is_a_404(orders: Orders) -> None:
    response = await orders.cancel(new_id())

    assert response.status_code == 404


# Following payments.


async def test_a_failed_payment_cancels_the_order(orders: Orders) -> None:
    order = await orders.place(await orders.user())

    await orders.deliver(payment(PaymentFailed, order))

    read = await orders.read(order["id"])
    assert read["status"] == "CANCELLED"
    assert orders.types(order["id"]) == ["OrderPlaced"]  # nothing to compensate


async def test_a_payment_succeeded_delivered_twice_changes_nothing_the_second_time(
    orders: Orders,
) -> None:
    order = await orders.place(await orders.user())
    succeeded = payment(PaymentSucceeded, order)
    await orders.deliver(succeeded)
    once = await orders.read(order["id"])

    await orders.deliver(succeeded)

    assert await orders.read(order["id"]) == once
    assert once["status"] == "PAID"
    assert orders.seams.runtime.bus.stats[("PaymentSucceeded", "orders", "handled")] == 2
    assert orders.seams.runtime.bus.stats[("PaymentSucceeded", "orders", "failed")] == 0


async def test_a_payment_succeeded_after_a_cancel_leaves_the_order_cancelled(
    orders: Orders,
) -> None:
    order = await orders.place(await orders.user())
    await orders.cancel(order["id"])

    await orders.deliver(payment(PaymentSucceeded, order), payment(PaymentRefunded, order, 2))

    assert (await orders.read(order["id"]))["status"] == "CANCELLED"


# Listing.


async def test_lists_filter_by_user_and_status_and_page_with_cursors(orders: Orders) -> None:
    ada, bob = await orders.user(), await orders.user()
    adas = [await orders.place(ada) for _ in range(5)]
    bobs = [await orders.place(bob) for _ in range(2)]
    for paid in (adas[1], adas[3], bobs[0]):
        await orders.deliver(payment(PaymentSucceeded, paid))
    await orders.cancel(adas[4]["id"])

    async def walk(**params: Any) -> list[str]:
        ids: list[str] = []
        cursor: str | None = None
        for _ in range(10):  # bounded: far more pages than any filter here needs
            page = await orders.seams.get(
                "/api/orders", limit=2, **params, **({"cursor": cursor} if cursor else {})
            )
            assert len(page["items"]) <= 2
            ids.extend(order["id"] for order in page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                return ids
        raise AssertionError("the pages never ended")

    assert await walk(user_id=ada) == [o["id"] for o in adas]
    assert await walk(user_id=bob) == [o["id"] for o in bobs]
    assert await walk(status="PAID") == [adas[1]["id"], adas[3]["id"], bobs[0]["id"]]
    assert await walk(user_id=ada, status="PAID") == [adas[1]["id"], adas[3]["id"]]
    assert await walk(user_id=ada, status="PENDING") == [adas[0]["id"], adas[2]["id"]]
    assert await walk(status="CANCELLED") == [adas[4]["id"]]
    assert await walk(user_id=new_id()) == []
