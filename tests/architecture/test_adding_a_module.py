"""The README's "Adding a module" walk-through, followed to the letter: shipping reacts to
PaymentSucceeded, with no edit to any existing module and no file outside its own folder but
the one list of modules in the composition root (here: the list a test hands create_app)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.main import default_modules
from tests.example_shipping.module import module as shipping
from tests.support.scenario import scenario
from tests.support.seams import fast_settings, running

pytestmark = pytest.mark.anyio

APP = Path(__file__).resolve().parents[2] / "app"
# What serves, configures and runs the modules without knowing any of them.
KNOWS_NO_MODULE = [
    APP / "kernel" / "settings.py",
    APP / "__main__.py",
    APP / "runtime.py",
    *sorted((APP / "split").rglob("*.py")),
    *sorted((APP / "gateway").rglob("*.py")),
]


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
        assert (event.order_id, event.user_id, event.carrier) == ("o1", "u1", "post")
        assert len(await s.store.for_order("o1")) == 1


async def test_its_settings_section_and_store_url_come_from_its_own_declaration(
    tmp_path: Path,
) -> None:
    from app.modules.payments.contracts import PaymentSucceeded
    from tests.example_shipping.contracts import ShipmentScheduled

    database = tmp_path / "elsewhere.db"
    settings = {"shipping_carrier": "courier", "shipping_db_url": f"sqlite:///{database}"}
    async with scenario(shipping, **settings) as s:
        paid = PaymentSucceeded(
            payment_id="p1", order_id="o1", user_id="u1", amount=100, currency="EUR"
        )
        await s.deliver(paid, producer="payments", aggregate_id="p1")
        await s.settle()

        [event] = s.published_events()
        assert isinstance(event, ShipmentScheduled)
        assert event.carrier == "courier"
        assert database.exists()


def test_nothing_outside_the_modules_and_the_composition_root_names_a_module() -> None:
    names = [module.name for module in [*default_modules(), shipping]]
    word = re.compile(rf"\b({'|'.join(names)})\b")
    found = [
        f"{path.relative_to(APP.parent)}:{number}: {line.strip()}"
        for path in KNOWS_NO_MODULE
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if word.search(line)
    ]
    assert found == []
