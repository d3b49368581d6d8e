"""The SQL modules' PostgreSQL stops for 5 s under load and starts again (issue 15, point 6).

A private server (tests/support/private_postgres.py: its own initdb, a free port, never the
machine's shared one) holds users, payments and notifications; orders and the bus keep their
files in the data dir. Once in the monolith, once split into processes over NATS (payments
in two replicas). While it is down a request that needs it is answered 503
problem+json with Retry-After, never 500; events wait (no dead letter, no attempt spent);
once it is back every order settles: PAID, charged once, noticed once.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from app.kernel.settings import Settings
from app.split.cluster import plan
from tests.support.invariants import order_breaches, read_records
from tests.support.nats import nats_server
from tests.support.private_postgres import PrivatePostgres, private_postgres
from tests.support.seams import Driver, fast_settings, running
from tests.support.split import (
    MODULES,
    SECRET,
    SPLIT_ENV,
    Split,
    _start,
    _stop,
    _wait_ready,
    free_gateway_port,
    log_in_admin,
    store_admin,
)

pytestmark = [pytest.mark.anyio, pytest.mark.services, pytest.mark.slow]

SQL_MODULES = ("users", "payments", "notifications")
DOWN_SECONDS = 5.0
SETTLE_SECONDS = 60.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Load:
    """Orders placed and payments listed every 20 ms, each answer kept, until stopped."""

    def __init__(self, driver: Driver, user: dict[str, Any]) -> None:
        self.driver = driver
        self.user = user
        self.placed: list[str] = []
        self.answers: Counter[tuple[str, int]] = Counter()
        self.refusals: list[httpx.Response] = []
        self.stop = anyio.Event()

    async def run(self) -> None:
        while not self.stop.is_set():
            self.keep("order", await self.driver.order(self.user))
            listed = await self.driver.client.get("/api/payments", headers=self.user["headers"])
            self.keep("payments", listed)
            await anyio.sleep(0.02)

    def keep(self, what: str, answer: httpx.Response) -> None:
        self.answers[what, answer.status_code] += 1
        if answer.status_code == 201:
            self.placed.append(answer.json()["id"])
        elif answer.status_code == 503:
            self.refusals.append(answer)


async def an_outage(server: PrivatePostgres, load: Load) -> float:
    """Stop the server (every connection cut) for DOWN_SECONDS under the load; start it."""
    async with anyio.create_task_group() as group:
        group.start_soon(load.run)
        await anyio.sleep(0.5)
        stopped = time.monotonic()
        await anyio.to_thread.run_sync(server.stop)
        await anyio.sleep(DOWN_SECONDS)
        await anyio.to_thread.run_sync(server.start)
        down = time.monotonic() - stopped
        await anyio.sleep(1.0)
        load.stop.set()
    return down


async def settled(driver: Driver, placed: list[str]) -> dict[str, list[str]]:
    """Until every order placed is no longer PENDING; then what is wrong with each."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        records = await read_records(driver.all_pages)
        pending = [i for i in placed if records.orders[i]["status"] == "PENDING"]
        if not pending or time.monotonic() > deadline:
            break
        await anyio.sleep(0.2)
    return {
        order_id: breaches
        for order_id in placed
        if (
            breaches := order_breaches(
                records.orders[order_id],
                records.payments_of[order_id],
                records.notices_of[order_id],
            )
        )
    }


async def test_the_database_stops_for_5_s_under_load_and_every_order_settles_once(
    tmp_path: Path,
) -> None:
    async with private_postgres(SQL_MODULES) as server:
        urls = {f"{module}_db_url": server.url(module) for module in SQL_MODULES}
        settings = fast_settings(data_dir=str(tmp_path / "var"), **urls)
        async with running(settings) as seams:
            user = await seams.register("Pat")
            first = await seams.place(user)
            await seams.settle()
            load = Load(seams, user)

            down = await an_outage(server, load)

            await seams.settle(SETTLE_SECONDS)
            last = await seams.place(user)  # and the system works as before
            await seams.settle()
            breaches = await settled(seams, [first["id"], *load.placed, last["id"]])
            bus = await seams.get("/api/admin/bus")

    print(f"down {down:.1f} s; answers {dict(load.answers)}; {len(load.placed)} placed")
    assert set(status for _, status in load.answers) <= {200, 201, 503}, load.answers
    assert load.refusals, "nothing needed the database while it was down"
    for refusal in load.refusals:
        assert refusal.headers["content-type"].startswith("application/problem+json")
        assert int(refusal.headers["retry-after"]) >= 1
        assert "unreachable" in refusal.json()["detail"]
    assert load.placed, "no order was taken"
    assert breaches == {}
    assert bus["dead_letters"] == 0, bus


@asynccontextmanager
async def split_on(server: PrivatePostgres, tmp_path: Path) -> AsyncIterator[Split]:
    """What `python -m app cluster --replicas payments=2` runs, over a private nats-server,
    with the SQL modules' stores in `server` (tests/support/split.py starts the processes)."""
    data_dir = tmp_path / "split"
    data_dir.mkdir()
    urls = {module: server.url(module) for module in SQL_MODULES}
    async with AsyncExitStack() as stack:
        nats = stack.enter_context(nats_server(tmp_path / "nats"))
        settings = Settings.from_env({}, data_dir=str(data_dir), port=free_gateway_port())
        the_plan = plan(
            settings,
            MODULES,
            replicas={"payments": 2},
            nats_url=nats.url,
            secret_key=SECRET,
            python=sys.executable,
        )
        await store_admin(urls["users"])
        client = await stack.enter_async_context(
            httpx.AsyncClient(base_url=the_plan.gateway_url, timeout=30)
        )
        split = Split(client, the_plan.gateway_url, nats, urls)
        env = {
            **SPLIT_ENV,
            **{f"APP_{module.upper()}_DB_URL": url for module, url in urls.items()},
            "APP_BUS_ACK_WAIT_SECONDS": "5",
        }
        try:
            for child in the_plan.children:
                split.processes[child.name] = _start(child, data_dir, env)
            await _wait_ready(split)
            await log_in_admin(client)
            yield split
        finally:
            for process in list(split.processes.values()):
                _stop(process)


@pytest.mark.split
async def test_in_split_mode_the_database_stops_for_5_s_and_every_order_settles_once(
    tmp_path: Path,
) -> None:
    async with private_postgres(SQL_MODULES) as server, split_on(server, tmp_path) as split:
        user = await split.register("Quin")
        first = await split.place(user)
        await split.settle()
        load = Load(split, user)

        down = await an_outage(server, load)

        await split.settle(SETTLE_SECONDS)
        last = await split.place(user)
        await split.settle()
        breaches = await settled(split, [first["id"], *load.placed, last["id"]])
        dead_letters = await split.dead_letters()
        logs = split.logs()

    print(f"down {down:.1f} s; answers {dict(load.answers)}; {len(load.placed)} placed")
    assert set(status for _, status in load.answers) <= {200, 201, 503}, load.answers
    assert load.refusals, "nothing needed the database while it was down"
    for refusal in load.refusals:
        assert refusal.headers["content-type"].startswith("application/problem+json")
        assert "retry-after" in refusal.headers, refusal.text
    assert load.placed and breaches == {}
    assert set(dead_letters.values()) == {0}, dead_letters
    assert "Traceback" not in logs, logs
