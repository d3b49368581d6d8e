"""The README's "Adding a module" walk-through, followed to the letter: shipping reacts to
PaymentSucceeded, with no edit to any existing module."""

from __future__ import annotations

import pytest

from app.main import default_modules
from tests.example_shipping.module import module as shipping
from tests.support.scenario import scenario
from tests.support.seams import fast_settings, running

pytestmark = pytest.mark.anyio


async def test_a_new_module_is_served_subscribed_and_in_the_topology() -> None:
    async with running(fast_settings(ephemeral="true"), [*default_modules(), shipping]) as seams:
        user = await seams.register("Sam")
        order = await seams.place(user, "tok_visa")
        await seams.settle()

        shipments = await seams.get("/api/shipping", order_id=order["id"])
        assert [(s["order_id"], s["user_id"]) for s in shipments] == [(order["id"], user["id"])]

        topology = await seams.get("/api/topology")
        [module] = [m for m in topology["modules"] if m["name"] == "shipping"]
        assert module["routes"] == [{"method": "GET", "path": "/api/shipping"}]
        assert module["publishes"] == ["ShipmentScheduled"]
        assert {"source": "payments", "target": "shipping", "kind": "event",
                "label": "PaymentSucceeded"} in topology["edges"]  # fmt: skip
        ready = await seams.get("/ready")
        assert ready["checks"]["shipping.store"] == "ok"


async def test_the_new_module_alone_in_a_scenario() -> None:
    from app.modules.payments.contracts import PaymentSucceeded
    from tests.example_shipping.contracts import ShipmentScheduled

    async with scenario(shipping) as s:
        paid = PaymentSucceeded(
            payment_id="p1", order_id="o1", user_id="u1", amount=100, currency="EUR"
        )
        envelope = await s.deliver(paid, producer="payments", aggregate_id="p1")
        await s.redeliver(envelope)  # a redelivery changes nothing
        await s.settle()

        [event] = s.published_events()
        assert isinstance(event, ShipmentScheduled)
        assert (event.order_id, event.user_id) == ("o1", "u1")
        assert len(await s.store.for_order("o1")) == 1
