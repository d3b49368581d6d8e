"""Broker loss is a state, not a crash (issue 15, point 2; docs/decisions/0032): the split's
nats-server is SIGKILLed under a load of orders and started again on its kept store. Each
process says so in ONE warning line and then retries quietly; the gateway's /ready is a 503
naming the broker; orders placed meanwhile are taken (201) and their events wait in the
outboxes; once the broker is back everything resumes by itself, and every order settles
paid once, notified once. With the broker gone again, SIGTERM stops every process cleanly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.support.invariants import order_breaches, read_records
from tests.support.split import STOP_SECONDS, Running, Split, split_system

pytestmark = [pytest.mark.anyio, pytest.mark.services, pytest.mark.split, pytest.mark.slow]

CLIENTS = 4
OUTAGE_SECONDS = 5.0
GONE = "is gone ("  # app/split/nats.py BrokerPresence.lost: the one warning
CRASH_MARKS = ("Traceback", "Exception Group", "Application shutdown failed", "ERROR")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Load:
    """Clients placing orders one after another until stopped; what each POST answered."""

    def __init__(self, split: Split, users: list[dict[str, Any]]) -> None:
        self.split = split
        self.users = users
        self.placed: dict[str, float] = {}  # order id -> when its 201 came
        self.answers: list[tuple[float, int]] = []
        self.stopping = anyio.Event()

    async def client(self, number: int) -> None:
        user = self.users[number]
        while not self.stopping.is_set():
            response = await self.split.order(user)
            self.answers.append((time.monotonic(), response.status_code))
            if response.status_code == 201:
                self.placed[response.json()["id"]] = time.monotonic()
            await anyio.sleep(0.05)

    def taken_between(self, start: float, end: float) -> int:
        return sum(1 for at in self.placed.values() if start <= at <= end)


async def until_ready(split: Split, ready: Callable[[int], bool], what: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        response = await split.client.get("/ready")
        if ready(response.status_code):
            body: dict[str, Any] = response.json()
            return body
        assert time.monotonic() < deadline, f"still waiting for {what}: {response.text}"
        await anyio.sleep(0.1)


def log_of(running: Running) -> str:
    running.log.flush()
    return Path(running.log_path).read_text(errors="replace")


async def test_the_broker_dies_under_load_and_everything_resumes_by_itself(
    tmp_path: Path,
) -> None:
    async with split_system(tmp_path, APP_OUTBOX_SWEEP_SECONDS="1") as split:
        users = [await split.register(f"Client{n}") for n in range(CLIENTS)]
        for user in users:  # the gateway has checked each one's credentials once
            await split.place(user)
        load = Load(split, users)
        async with anyio.create_task_group() as clients:
            for number in range(CLIENTS):
                clients.start_soon(load.client, number)
            await anyio.sleep(1.5)

            split.nats.kill()
            lost_at = time.monotonic()
            not_ready = await until_ready(split, lambda status: status == 503, "a 503")
            await anyio.sleep(OUTAGE_SECONDS)
            split.nats.start()  # same port, same store
            back_at = time.monotonic()
            await until_ready(split, lambda status: status == 200, "ready again")
            await anyio.sleep(1.5)
            load.stopping.set()

        assert not_ready["checks"]["broker"].startswith("failing"), not_ready
        assert "broker" in not_ready["detail"]
        # Writes that need no broker were taken while it was away.
        assert load.taken_between(lost_at + 0.5, back_at) > 0, load.answers
        assert {status for _, status in load.answers} <= {201, 503}, load.answers

        await split.settle(timeout=60)
        records = await read_records(split.all_pages)
        mine = {order_id: records.orders.get(order_id) for order_id in load.placed}
        breaches = {
            order_id: order_breaches(
                order, records.payments_of[order_id], records.notices_of[order_id]
            )
            if order is not None
            else ["lost"]
            for order_id, order in mine.items()
        }
        assert {k: v for k, v in breaches.items() if v} == {}
        assert all(order is not None and order["status"] == "PAID" for order in mine.values())
        assert len(records.orders) == len(load.placed) + CLIENTS  # nothing doubled
        assert await split.dead_letters() == dict.fromkeys(
            (p.child.name for p in split.module_processes()), 0
        )

        logs = {name: log_of(running) for name, running in split.processes.items()}
        assert {name: text.count(GONE) for name, text in logs.items()} == dict.fromkeys(logs, 1)
        for name, text in logs.items():
            assert not [mark for mark in CRASH_MARKS if mark in text], f"{name}:\n{text[-3000:]}"

        # With the broker gone again, SIGTERM: every process exits 0, in time, cleanly.
        split.nats.kill()
        await until_ready(split, lambda status: status == 503, "a 503 again")
        started = time.monotonic()
        for running in split.processes.values():
            running.process.terminate()
        codes = {
            name: running.process.wait(STOP_SECONDS) for name, running in split.processes.items()
        }
        assert codes == dict.fromkeys(split.processes, 0)
        assert time.monotonic() - started < 10
        for name, running in split.processes.items():
            text = log_of(running)
            assert not [mark for mark in CRASH_MARKS if mark in text], f"{name}:\n{text[-3000:]}"
