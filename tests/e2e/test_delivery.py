"""Nothing lost, nothing twice: redelivery, ordering and idempotency keys, end to end."""

from __future__ import annotations

import asyncio
import random
from collections import Counter, defaultdict
from typing import Any

import pytest

from app.bus import Envelope, Event
from app.runtime import Runtime
from tests.support.seams import Seams, fast_settings, running

pytestmark = pytest.mark.anyio


class Recorder:
    """Subscribes to every event every module publishes and keeps the envelopes in order."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    def attach(self, runtime: Runtime) -> None:
        for running_module in runtime.modules:
            for event_type in running_module.module.publishes:
                runtime.bus.subscribe("recorder", event_type, self.record)

    async def record(self, _event: Event, envelope: Envelope) -> None:
        self.envelopes.append(envelope)


async def snapshot(seams: Seams) -> dict[str, Any]:
    orders = await seams.all_pages("/api/orders")
    payments = await seams.all_pages("/api/payments")
    notes = await seams.all_pages("/api/notifications")
    payments_store = next(m.store for m in seams.runtime.modules if m.module.name == "payments")
    return {
        "orders": sorted((o["id"], o["status"]) for o in orders),
        "payments": sorted((p["order_id"], p["status"], p["attempts"]) for p in payments),
        "notifications": sorted((n["order_id"], n["kind"], n["to"]) for n in notes),
        "ledger": await payments_store.ledger_totals(),
    }


async def full_flow(seams: Seams) -> None:
    user = await seams.register("Rae")
    await seams.place(user, "tok_visa")
    await seams.place(user, "tok_chargeDeclined")
    await seams.place(user, "tok_processing_error")
    refunded = await seams.place(user, "tok_visa")
    await seams.settle()
    await seams.client.post(f"/api/orders/{refunded['id']}/cancel")
    cancelled = await seams.place(user, "tok_slow")
    await seams.client.post(f"/api/orders/{cancelled['id']}/cancel")
    await seams.client.patch(f"/api/users/{user['id']}", json={"name": "Rae Two"})
    await seams.settle()


async def test_every_event_of_a_full_flow_delivered_again_changes_nothing() -> None:
    recorder = Recorder()
    async with running(fast_settings(ephemeral="true"), prepare=recorder.attach) as seams:
        await full_flow(seams)
        before = await snapshot(seams)
        assert len(recorder.envelopes) >= 12

        sent = list(recorder.envelopes)
        redeliveries = [*sent, *reversed(sent), *random.Random(7).sample(sent, len(sent))]
        for envelope in redeliveries:
            await seams.runtime.bus.transport.publish(envelope)
        await seams.settle()

        assert await snapshot(seams) == before
        assert await seams.runtime.bus.store.count_dead_letters() == 0


async def test_events_of_one_aggregate_reach_consumers_in_order_under_load() -> None:
    recorder = Recorder()
    async with running(fast_settings(ephemeral="true"), prepare=recorder.attach) as seams:
        users = [await seams.register(f"U{i}") for i in range(4)]

        async def place_and_maybe_cancel(i: int) -> None:
            order = await seams.place(users[i % 4], random.choice(["tok_visa", "tok_slow"]))
            if i % 2:
                await seams.client.post(f"/api/orders/{order['id']}/cancel")

        await asyncio.gather(*(place_and_maybe_cancel(i) for i in range(40)))
        await seams.settle()

        seen: dict[str, list[int]] = defaultdict(list)
        for envelope in recorder.envelopes:
            seen[envelope.aggregate_id].append(envelope.sequence)
        assert seen, "nothing was recorded"
        for aggregate, sequences in seen.items():
            assert sequences == sorted(sequences), (aggregate, sequences)
        orders = await seams.all_pages("/api/orders")
        assert {o["status"] for o in orders} <= {"PAID", "CANCELLED", "REFUNDED"}


async def test_fifty_concurrent_identical_requests_make_one_order_and_one_charge(
    seams: Seams,
) -> None:
    user = await seams.register("Kim")
    body = {
        "user_id": user["id"],
        "currency": "EUR",
        "payment_token": "tok_visa",
        "items": [{"sku": "lamp", "quantity": 1, "unit_price": 4200}],
    }
    headers = {**user["headers"], "Idempotency-Key": "order-lamp-1"}

    answers = await asyncio.gather(
        *(seams.client.post("/api/orders", json=body, headers=headers) for _ in range(50))
    )
    await seams.settle()

    statuses = Counter(a.status_code for a in answers)
    assert set(statuses) <= {201, 409}, statuses
    assert len({a.json()["id"] for a in answers if a.status_code == 201}) == 1
    for refused in (a for a in answers if a.status_code == 409):
        assert refused.headers["retry-after"] == "1"
    orders = await seams.all_pages("/api/orders", user_id=user["id"])
    assert len(orders) == 1
    payments = await seams.all_pages("/api/payments")
    assert [(p["order_id"], p["status"]) for p in payments] == [(orders[0]["id"], "SUCCEEDED")]

    replay = await seams.client.post("/api/orders", json=body, headers=headers)
    assert replay.status_code == 201
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["id"] == orders[0]["id"]
    assert replay.json()["status"] == "PENDING"  # the first response, as it was


async def test_the_same_key_with_another_body_is_a_422(seams: Seams) -> None:
    user = await seams.register("Lu")
    first = await seams.client.post(
        "/api/users",
        json={"name": "Mo", "email": "mo@example.com", "password": "long enough"},
        headers={"Idempotency-Key": "signup-mo"},
    )
    again = await seams.client.post(
        "/api/users",
        json={"name": "Mo", "email": "mo@example.com", "password": "long enough"},
        headers={"Idempotency-Key": "signup-mo"},
    )
    other = await seams.client.post(
        "/api/users",
        json={"name": "Mo", "email": "other@example.com", "password": "long enough"},
        headers={"Idempotency-Key": "signup-mo"},
    )
    assert (first.status_code, again.status_code, other.status_code) == (201, 201, 422)
    assert again.json() == first.json()
    assert "different request body" in other.json()["detail"]
    # Keys are scoped to the caller: another user may use the same key for an order.
    body = {"currency": "EUR", "payment_token": "tok_visa",
            "items": [{"sku": "a", "quantity": 1, "unit_price": 1}]}  # fmt: skip
    mo = await seams.log_in("mo@example.com", "long enough")
    for owner, headers in ((user["id"], user["headers"]), (first.json()["id"], mo["headers"])):
        placed = await seams.client.post(
            "/api/orders",
            json={**body, "user_id": owner},
            headers={**headers, "Idempotency-Key": "k"},
        )
        assert placed.status_code == 201, placed.text


async def test_an_expired_key_can_be_used_again() -> None:
    async with running(fast_settings(ephemeral="true", idempotency_ttl_seconds="0.05")) as seams:
        user = await seams.register("Ned")
        body = {"user_id": user["id"], "currency": "EUR", "payment_token": "tok_visa",
                "items": [{"sku": "a", "quantity": 1, "unit_price": 1}]}  # fmt: skip
        headers = {**user["headers"], "Idempotency-Key": "x"}
        first = await seams.client.post("/api/orders", json=body, headers=headers)
        await asyncio.sleep(0.06)  # the key's lifetime, not a wait for the system
        second = await seams.client.post("/api/orders", json=body, headers=headers)
        assert (first.status_code, second.status_code) == (201, 201)
        assert first.json()["id"] != second.json()["id"]
