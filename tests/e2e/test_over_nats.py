"""The whole monolith in one process with its events crossing a private nats-server
(APP_BUS_URL=nats://…): what only this mode has. The order flow itself runs over NATS in
tests/e2e/test_order_flow.py (its "nats" backend)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from app.split.nats_transport import NatsTransport
from tests.support.nats import NatsServer, nats_server
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


async def test_the_bus_runs_over_nats_and_ready_names_the_broker(seams: Seams) -> None:
    assert isinstance(seams.runtime.bus.transport, NatsTransport)
    ready = await seams.client.get("/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["bus.transport"] == "ok"


async def test_ready_is_503_and_names_the_broker_when_it_is_gone(tmp_path: Path) -> None:
    with nats_server(tmp_path / "nats") as own:
        async with running(fast_settings(ephemeral="true", bus_url=own.url)) as seams:
            own.kill()

            ready = await seams.client.get("/ready")

            assert ready.status_code == 503
            check = ready.json()["checks"]["bus.transport"]
            assert check.startswith("failing") and own.url in check, check
            own.start()  # so the app stops cleanly
