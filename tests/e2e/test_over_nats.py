"""The seed's flow through the gateway with the whole monolith in one process, its events
crossing a private nats-server (APP_BUS_URL=nats://…) instead of the in-process bus."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import cast

import pytest

from app.bus.nats_transport import NatsTransport
from tests.support.nats import NatsServer, nats_server, settle
from tests.support.seams import Seams, fast_settings, running

pytestmark = [pytest.mark.anyio, pytest.mark.services]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    with nats_server(tmp_path_factory.mktemp("nats")) as running_server:
        yield running_server


@pytest.fixture
async def seams(server: NatsServer) -> AsyncIterator[Seams]:
    async with running(fast_settings(ephemeral="true", bus_url=server.url)) as s:
        yield s


async def settled(seams: Seams) -> None:
    """Every event published, delivered by the broker, handled and acked."""
    transport = cast(NatsTransport, seams.runtime.bus.transport)
    await settle(seams.runtime.bus, transport)


async def test_the_bus_runs_over_nats_and_ready_names_the_broker(seams: Seams) -> None:
    assert isinstance(seams.runtime.bus.transport, NatsTransport)
    ready = await seams.client.get("/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["bus.transport"] == "ok"


async def test_visa_order_over_nats_is_paid_once_and_notified_once(seams: Seams) -> None:
    user = await seams.register("Ada")
    order = await seams.place(user, "tok_visa")
    assert order["status"] == "PENDING"

    await settled(seams)

    assert (await seams.get(f"/api/orders/{order['id']}"))["status"] == "PAID"
    payments = await seams.all_pages("/api/payments", order_id=order["id"])
    assert [(p["status"], p["amount"], p["attempts"]) for p in payments] == [
        ("SUCCEEDED", order["total"], 1)
    ]
    notes = await seams.all_pages("/api/notifications", order_id=order["id"])
    assert [(n["kind"], n["to"], n["user_id"]) for n in notes] == [
        ("payment_succeeded", user["email"], user["id"])
    ]


async def test_cancelling_a_paid_order_over_nats_refunds_it(seams: Seams) -> None:
    user = await seams.register("Cy")
    order = await seams.place(user, "tok_visa")
    await settled(seams)

    response = await seams.client.post(f"/api/orders/{order['id']}/cancel")
    assert response.status_code == 202
    await settled(seams)

    assert (await seams.get(f"/api/orders/{order['id']}"))["status"] == "REFUNDED"
    payments = await seams.all_pages("/api/payments", order_id=order["id"])
    assert [p["status"] for p in payments] == ["REFUNDED"]
    notes = await seams.all_pages("/api/notifications", order_id=order["id"])
    assert sorted(n["kind"] for n in notes) == ["payment_refunded", "payment_succeeded"]


async def test_ready_is_503_and_names_the_broker_when_it_is_gone(tmp_path: Path) -> None:
    with nats_server(tmp_path / "nats") as own:
        async with running(fast_settings(ephemeral="true", bus_url=own.url)) as seams:
            own.kill()

            ready = await seams.client.get("/ready")

            assert ready.status_code == 503
            check = ready.json()["checks"]["bus.transport"]
            assert check.startswith("failing") and own.url in check, check
            own.start()  # so the app stops cleanly
