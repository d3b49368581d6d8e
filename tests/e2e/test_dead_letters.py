"""A handler that keeps failing: its event becomes a dead letter that can be inspected,
replayed once the handler is fixed, and the flow completes exactly once."""

from __future__ import annotations

from typing import Any

import pytest

from app.modules.payments.store import PaymentsStore
from tests.support.seams import Seams

pytestmark = pytest.mark.anyio


@pytest.fixture
def break_payments(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make payments' OrderPlaced handler fail until the returned function is called."""

    async def broken(*args: Any, **kwargs: Any) -> bool:
        raise RuntimeError("payments database is read-only")

    monkeypatch.setattr(PaymentsStore, "open_payment", broken)
    return monkeypatch.undo


async def test_a_dead_letter_replayed_after_the_fix_completes_the_flow_once(
    seams: Seams, break_payments: Any
) -> None:
    user = await seams.register("Dee")
    order = await seams.place(user, "tok_visa")
    await seams.settle()

    letters = (await seams.get("/api/admin/dead-letters"))["items"]
    assert [(d["consumer"], d["event_type"], d["aggregate_id"]) for d in letters] == [
        ("payments", "OrderPlaced", order["id"])
    ]
    assert letters[0]["attempts"] == seams.runtime.settings.bus_max_attempts
    assert "read-only" in letters[0]["error"]
    assert (await seams.get(f"/api/orders/{order['id']}"))["status"] == "PENDING"
    assert (await seams.get("/api/admin/bus"))["dead_letters"] == 1

    break_payments()  # the fix
    replay = await seams.client.post(f"/api/admin/dead-letters/{letters[0]['id']}/replay")
    assert replay.status_code == 202
    await seams.settle()

    assert (await seams.get(f"/api/orders/{order['id']}"))["status"] == "PAID"
    payments = await seams.all_pages("/api/payments", order_id=order["id"])
    assert [p["status"] for p in payments] == ["SUCCEEDED"]
    notes = await seams.all_pages("/api/notifications", order_id=order["id"])
    assert [n["kind"] for n in notes] == ["payment_succeeded"]
    assert (await seams.get("/api/admin/dead-letters"))["items"] == []
    second = await seams.client.post(f"/api/admin/dead-letters/{letters[0]['id']}/replay")
    assert second.status_code == 404


async def test_a_cancel_waits_behind_the_dead_letter_of_its_order(
    seams: Seams, break_payments: Any
) -> None:
    user = await seams.register("Eve")
    order = await seams.place(user, "tok_visa")
    await seams.settle()
    cancel = await seams.client.post(f"/api/orders/{order['id']}/cancel")
    assert cancel.status_code == 200  # PENDING: cancelled at once
    await seams.settle()  # OrderCancelled is parked behind OrderPlaced's dead letter

    break_payments()
    replayed = await seams.client.post("/api/admin/dead-letters/replay")
    assert replayed.status_code == 202
    await seams.settle()

    assert (await seams.get(f"/api/orders/{order['id']}"))["status"] == "CANCELLED"
    payments = await seams.all_pages("/api/payments", order_id=order["id"])
    # OrderPlaced then OrderCancelled, in that order: the charge is stopped or refunded.
    assert [p["status"] for p in payments] in (["FAILED"], ["REFUNDED"])
    store = next(m.store for m in seams.runtime.modules if m.module.name == "payments")
    captured, refunded = await store.ledger_totals()
    assert captured == refunded


async def test_discarding_an_unknown_dead_letter_is_a_404(seams: Seams) -> None:
    response = await seams.client.delete("/api/admin/dead-letters/0000")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
