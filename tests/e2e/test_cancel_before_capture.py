"""A cancel that arrives before the capture voids the charge; one after it refunds.

The processor authorises a card first (the slow part for tok_slow) and captures only if
the order is still wanted: a PENDING order cancelled meanwhile is never captured, so there
is nothing to refund and nothing to tell the customer about its payment.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from app.modules.payments.store import PaymentsStore
from tests.support.seams import Seams, fast_settings, running

pytestmark = pytest.mark.anyio


@pytest.fixture
async def seams(anyio_backend: str) -> AsyncIterator[Seams]:
    async with running(fast_settings(ephemeral="true", slow_card_seconds="0.25")) as system:
        yield system


def payments_store(seams: Seams) -> PaymentsStore:
    store = next(m.store for m in seams.runtime.modules if m.module.name == "payments")
    assert isinstance(store, PaymentsStore)
    return store


async def charging(seams: Seams, order: dict[str, Any]) -> None:
    """Return once payments has opened the order's payment and is charging it."""
    deadline = time.monotonic() + 5
    while not await seams.all_pages("/api/payments", order_id=order["id"]):
        assert time.monotonic() < deadline, "payments never opened the order's payment"
        await anyio.sleep(0.005)


async def test_cancelling_a_slow_charge_right_away_voids_it_without_capture_or_notice(
    seams: Seams,
) -> None:
    user = await seams.register("Flo")
    order = await seams.place(user, "tok_slow")
    await charging(seams, order)  # the cancel meets the charge, it does not overtake it

    response = await seams.client.post(f"/api/orders/{order['id']}/cancel")
    assert (response.status_code, response.json()["status"]) == (200, "CANCELLED")
    await seams.settle()

    assert (await seams.get(f"/api/orders/{order['id']}"))["status"] == "CANCELLED"
    payments = await seams.all_pages("/api/payments", order_id=order["id"])
    assert [(p["status"], p["failure_reason"]) for p in payments] == [("FAILED", "order_cancelled")]
    assert await payments_store(seams).ledger_entry(order["id"]) == ("voided", False)
    assert await payments_store(seams).ledger_totals() == (0, 0)
    assert await seams.all_pages("/api/notifications", order_id=order["id"]) == []


async def test_cancelling_after_the_capture_still_refunds_and_says_so_once(seams: Seams) -> None:
    user = await seams.register("Gil")
    order = await seams.place(user, "tok_slow")
    await seams.settle()
    assert (await seams.get(f"/api/orders/{order['id']}"))["status"] == "PAID"

    response = await seams.client.post(f"/api/orders/{order['id']}/cancel")
    assert (response.status_code, response.json()["status"]) == (202, "PAID")
    await seams.settle()

    assert (await seams.get(f"/api/orders/{order['id']}"))["status"] == "REFUNDED"
    payments = await seams.all_pages("/api/payments", order_id=order["id"])
    assert [p["status"] for p in payments] == ["REFUNDED"]
    assert await payments_store(seams).ledger_entry(order["id"]) == ("captured", True)
    notes = await seams.all_pages("/api/notifications", order_id=order["id"])
    assert sorted(n["kind"] for n in notes) == ["payment_refunded", "payment_succeeded"]
