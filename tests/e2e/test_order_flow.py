"""The seed's flow through the gateway, on every store a user can pick, over NATS in one
process ("nats"), and split into processes over NATS ("split", tests/support/split.py):
the very same tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.nats import nats_server
from tests.support.seams import Driver, fast_settings, running
from tests.support.split import split_system
from tests.support.stores import BACKENDS, store_urls

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(
    scope="module",
    params=[
        *BACKENDS,
        pytest.param("nats", marks=pytest.mark.services),
        pytest.param("split", marks=[pytest.mark.services, pytest.mark.split, pytest.mark.slow]),
    ],
)
async def seams(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Driver]:
    """One system per backend for the whole file (six processes take seconds to start);
    every test acts as its own users on their own orders."""
    data = tmp_path_factory.mktemp(request.param)
    if request.param == "split":
        async with split_system(data) as system:
            yield system
        return
    if request.param == "nats":
        with nats_server(data / "nats") as broker:
            async with running(fast_settings(ephemeral="true", bus_url=broker.url)) as s:
                yield s
        return
    async with store_urls(request.param, data) as urls, running(fast_settings(**urls)) as s:
        yield s


async def test_visa_order_is_paid_once_and_notified_once(seams: Driver) -> None:
    user = await seams.register("Ada")
    order = await seams.place(user, "tok_visa", items=[("book", 2, 1250), ("pen", 3, 199)])
    assert order["status"] == "PENDING"
    assert order["total"] == 2 * 1250 + 3 * 199

    await seams.settle()

    assert (await seams.get(f"/api/orders/{order['id']}"))["status"] == "PAID"
    payments = await seams.all_pages("/api/payments", order_id=order["id"])
    assert [(p["status"], p["amount"], p["attempts"]) for p in payments] == [
        ("SUCCEEDED", order["total"], 1)
    ]
    notes = await seams.all_pages("/api/notifications", order_id=order["id"])
    assert [(n["kind"], n["to"], n["user_id"]) for n in notes] == [
        ("payment_succeeded", user["email"], user["id"])
    ]


async def test_declined_card_cancels_the_order_without_notification(seams: Driver) -> None:
    user = await seams.register("Bob")
    order = await seams.place(user, "tok_chargeDeclined")

    await seams.settle()

    assert (await seams.get(f"/api/orders/{order['id']}"))["status"] == "CANCELLED"
    payments = await seams.all_pages("/api/payments", order_id=order["id"])
    assert [(p["status"], p["failure_reason"]) for p in payments] == [("FAILED", "card_declined")]
    assert await seams.all_pages("/api/notifications", order_id=order["id"]) == []


async def test_cancelling_a_paid_order_refunds_it_and_notifies(seams: Driver) -> None:
    user = await seams.register("Cy")
    order = await seams.place(user, "tok_visa")
    await seams.settle()

    response = await seams.client.post(f"/api/orders/{order['id']}/cancel")
    assert response.status_code == 202
    assert response.json()["status"] == "PAID"
    again = await seams.client.post(f"/api/orders/{order['id']}/cancel")
    assert again.status_code == 202
    await seams.settle()

    assert (await seams.get(f"/api/orders/{order['id']}"))["status"] == "REFUNDED"
    payments = await seams.all_pages("/api/payments", order_id=order["id"])
    assert [p["status"] for p in payments] == ["REFUNDED"]
    notes = await seams.all_pages("/api/notifications", order_id=order["id"])
    assert sorted(n["kind"] for n in notes) == ["payment_refunded", "payment_succeeded"]

    final = await seams.client.post(f"/api/orders/{order['id']}/cancel")
    assert final.status_code == 409
    assert "REFUNDED" in final.json()["detail"]


async def test_processing_error_is_retried_until_paid(seams: Driver) -> None:
    user = await seams.register("Di")
    order = await seams.place(user, "tok_processing_error")

    await seams.settle()

    assert (await seams.get(f"/api/orders/{order['id']}"))["status"] == "PAID"
    payments = await seams.all_pages("/api/payments", order_id=order["id"])
    assert [(p["status"], p["attempts"]) for p in payments] == [("SUCCEEDED", 3)]
    assert len(await seams.all_pages("/api/notifications", order_id=order["id"])) == 1


async def test_slow_card_succeeds(seams: Driver) -> None:
    user = await seams.register("Ed")
    order = await seams.place(user, "tok_slow")
    await seams.settle()
    assert (await seams.get(f"/api/orders/{order['id']}"))["status"] == "PAID"


async def test_cancelling_a_pending_order_is_immediate_and_nothing_is_captured(
    seams: Driver,
) -> None:
    user = await seams.register("Flo")
    order = await seams.place(user, "tok_slow")

    response = await seams.client.post(f"/api/orders/{order['id']}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "CANCELLED"
    await seams.settle()

    assert (await seams.get(f"/api/orders/{order['id']}"))["status"] == "CANCELLED"
    payments = await seams.all_pages("/api/payments", order_id=order["id"])
    # The charge was either never made or refunded: the customer keeps the money.
    assert [p["status"] for p in payments] in (["FAILED"], ["REFUNDED"])


async def test_one_request_id_follows_an_order_to_its_events(seams: Driver) -> None:
    user = await seams.register("Gus")
    response = await seams.client.post(
        "/api/orders",
        headers={**user["headers"], "X-Request-ID": "trace-me-123"},
        json={
            "user_id": user["id"],
            "currency": "EUR",
            "payment_token": "tok_visa",
            "items": [{"sku": "a", "quantity": 1, "unit_price": 100}],
        },
    )
    assert response.headers["x-request-id"] == "trace-me-123"
    await seams.settle()
    notes = await seams.all_pages("/api/notifications", order_id=response.json()["id"])
    assert [n["kind"] for n in notes] == ["payment_succeeded"]
