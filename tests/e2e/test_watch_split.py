"""The watch in split mode: each module process reports its bus over NATS, so the gateway
process alone serves an order's journey across every process, and never forwards it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.test_watch import PAID, handled_by, journey_until
from tests.support.split import Split, split_system

pytestmark = [pytest.mark.anyio, pytest.mark.services, pytest.mark.split, pytest.mark.slow]


@pytest.fixture
async def split(tmp_path: Path) -> AsyncIterator[Split]:
    async with split_system(tmp_path) as system:
        yield system


async def test_the_gateway_s_journey_names_the_process_of_each_handling(split: Split) -> None:
    user = await split.register("Ada")
    order = await split.place(user, "tok_visa")
    journey = await journey_until(
        split, order["id"], user["headers"], lambda j: handled_by(j) >= PAID, timeout=10
    )
    request = journey["steps"][0]
    assert (request["kind"], request["process"], request["user_id"]) == (
        "request",
        "gateway",
        user["id"],
    )
    where = {
        (s["type"], s["consumer"]): s["process"] for s in journey["steps"] if s["kind"] == "handled"
    }
    assert where == {
        ("OrderPlaced", "payments"): "payments",
        ("PaymentSucceeded", "orders"): "orders",
        ("PaymentSucceeded", "notifications"): "notifications",
    }
    published = {s["type"]: s["process"] for s in journey["steps"] if s["kind"] == "published"}
    assert published == {"OrderPlaced": "orders", "PaymentSucceeded": "payments"}
    assert all(
        s["hop_ms"] >= 0 for s in journey["steps"] if s["kind"] == "handled"
    )  # publish to handled, across processes

    state = await split.get("/api/watch/state")
    assert state["process"] == "gateway"
    payments = next(c for c in state["consumers"] if c["consumer"] == "payments")
    assert payments["handled"] >= 1 and payments["backlog"] is None  # in another process

    stranger = await split.register("Bob")
    refused = await split.client.get(
        f"/api/orders/{order['id']}/journey", headers=stranger["headers"]
    )
    assert refused.status_code == 404
    anonymous = await split.client.get(
        f"/api/orders/{order['id']}/journey", headers={"Authorization": ""}
    )
    assert anonymous.status_code == 401
