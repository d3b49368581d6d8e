"""Nothing lost, nothing twice: `python -m app` on file-backed stores, under concurrent
orders, killed with SIGKILL at a random moment or stopped with SIGTERM, then restarted on
the same data dir.

Whatever the moment, once the restarted server is quiet: every order acknowledged with a
2xx exists with its total; none stays PENDING; every order has exactly one payment; a PAID
order has one succeeded charge for its total and one payment notification; a CANCELLED
order has no charge left standing; an acknowledged cancel took effect; and the simulated
processor's own books agree. `SEAMS_CRASH_ROUNDS` raises the number of kill points.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests.support.invariants import (
    ledger_breaches,
    order_breaches,
    promise_breaches,
    read_records,
)
from tests.support.seams import all_pages
from tests.support.server import Server, log_in, served

pytestmark = [pytest.mark.anyio, pytest.mark.slow]  # each starts and kills real processes

TOKENS = ("tok_visa", "tok_chargeDeclined", "tok_processing_error", "tok_slow")
USERS = 10
WORKERS = 16
CANCEL_SHARE = 0.3  # of placed orders, a cancel follows (of that order or an earlier one)
ROUNDS = max(4, int(os.environ.get("SEAMS_CRASH_ROUNDS", "4")))
RECOVERY_KILL_SEED = 1  # this round also kills the restarted server during its recovery
ROUND_SECONDS = 60.0
GRACEFUL_SECONDS = 10.0  # the server's timeout_graceful_shutdown


@dataclass(frozen=True)
class Placed:
    id: str
    user_id: str
    total: int
    token: str


@dataclass
class Load:
    """What the clients were told, and what went wrong on the wire."""

    placed: dict[str, Placed] = field(default_factory=dict)
    cancels: dict[str, int] = field(default_factory=dict)  # order id: 200 or 202
    in_flight: int = 0
    answered: int = 0
    refused: int = 0  # no response at all: never counted as acknowledged
    truncated: list[str] = field(default_factory=list)  # a response began but did not end
    unexpected: list[str] = field(default_factory=list)  # a status the call may not answer


@dataclass(frozen=True)
class Checked:
    orders: int
    statuses: Counter[str]
    payments: Counter[str]
    notifications: int

    def summary(self, load: Load) -> str:
        unacknowledged = self.orders - len(load.placed)
        return (
            f"{len(load.placed)} acknowledged (+{unacknowledged} kept without an answer), "
            f"{self.statuses['PAID']} PAID, {self.statuses['CANCELLED']} CANCELLED, "
            f"{self.statuses['REFUNDED']} REFUNDED, {self.statuses['PENDING']} PENDING; "
            f"{self.payments['SUCCEEDED']} charges standing, {self.payments['REFUNDED']} "
            f"refunded, {self.payments['FAILED']} failed; {self.notifications} notifications "
            f"checked; {len(load.cancels)} cancels acknowledged; {load.refused} requests "
            f"refused, {len(load.truncated)} cut off"
        )


# Driving the load.


async def register_users(url: str) -> dict[str, dict[str, str]]:
    """USERS users, each logged in: user id → its Authorization header."""
    users = {}
    async with httpx.AsyncClient(base_url=url, timeout=10.0) as client:
        for n in range(USERS):
            email, password = f"crash{n}@example.com", "correct horse"
            response = await client.post(
                "/api/users", json={"name": f"Crash {n}", "email": email, "password": password}
            )
            assert response.status_code == 201, response.text
            users[response.json()["id"]] = await log_in(url, email, password)
    return users


async def call(
    client: httpx.AsyncClient, path: str, body: Any, caller: dict[str, str], load: Load
) -> tuple[int, Any] | None:
    """POST and read the whole answer: (status, json), or None when the wire failed."""
    load.in_flight += 1
    try:
        async with client.stream("POST", path, json=body, headers=caller) as response:
            try:
                payload = json.loads(await response.aread())
            except (httpx.TransportError, ValueError) as error:
                load.truncated.append(f"POST {path}: {response.status_code}, then {error!r}")
                return None
    except httpx.TransportError:
        load.refused += 1
        return None
    finally:
        load.in_flight -= 1
    load.answered += 1
    return response.status_code, payload


async def place_and_cancel(
    client: httpx.AsyncClient,
    users: dict[str, dict[str, str]],
    rng: random.Random,
    load: Load,
    stop: anyio.Event,
) -> None:
    """One client: place orders with a mix of cards, cancel some; stop at the first failure
    on the wire (the server is gone) or when told."""
    while not stop.is_set():
        token = rng.choice(TOKENS)
        items: list[dict[str, Any]] = [
            {
                "sku": f"sku-{rng.randrange(50)}",
                "quantity": rng.randint(1, 5),
                "unit_price": rng.randint(100, 10_000),
            }
            for _ in range(rng.randint(1, 3))
        ]
        user_id = rng.choice(list(users))
        body = {"user_id": user_id, "currency": "EUR", "payment_token": token, "items": items}
        answer = await call(client, "/api/orders", body, users[user_id], load)
        if answer is None:
            return
        status, order = answer
        total = sum(item["quantity"] * item["unit_price"] for item in items)
        if status != 201 or order["status"] != "PENDING" or order["total"] != total:
            load.unexpected.append(f"place (total {total}): {status} {order}")
            continue
        placed = load.placed[order["id"]] = Placed(order["id"], user_id, order["total"], token)
        if rng.random() >= CANCEL_SHARE:
            continue
        target = placed if rng.random() < 0.5 else rng.choice(list(load.placed.values()))
        cancel = f"/api/orders/{target.id}/cancel"
        answer = await call(client, cancel, None, users[target.user_id], load)
        if answer is None:
            return
        status, cancelled = answer
        if status in (200, 202):
            load.cancels.setdefault(target.id, status)
        elif status != 409:  # 409: already CANCELLED or REFUNDED, e.g. a declined card
            load.unexpected.append(f"cancel {target.id}: {status} {cancelled}")


@asynccontextmanager
async def orders_pouring_in(
    url: str, users: dict[str, dict[str, str]], rng: random.Random
) -> AsyncIterator[Load]:
    """WORKERS clients placing and cancelling orders until the block ends."""
    load = Load()
    stop = anyio.Event()
    limits = httpx.Limits(max_connections=WORKERS)
    async with (
        httpx.AsyncClient(base_url=url, timeout=20.0, limits=limits) as client,
        anyio.create_task_group() as clients,
    ):
        for _ in range(WORKERS):
            worker_rng = random.Random(rng.random())
            clients.start_soon(place_and_cancel, client, users, worker_rng, load, stop)
        yield load
        stop.set()


# Checking what survived.


def processor_books(data_dir: Path) -> dict[str, tuple[str | None, bool]]:
    """The simulated card processor's ledger, read-only: order id → (outcome, refunded).
    It stands for the bank's side of the story, which no API of ours may rewrite."""
    uri = f"file:{data_dir / 'payments.db'}?mode=ro"
    with sqlite3.connect(uri, uri=True, timeout=5.0) as books:
        rows = books.execute("SELECT order_id, outcome, refunded FROM processor_ledger")
        return {order_id: (outcome, bool(refunded)) for order_id, outcome, refunded in rows}


async def check_nothing_lost_nothing_twice(server: Server, data_dir: Path, load: Load) -> Checked:
    """Every invariant over every page (the admin sees everyone's); AssertionError listing
    each breach, with the counts."""
    async with httpx.AsyncClient(base_url=server.url, headers=server.admin, timeout=20.0) as client:
        records = await read_records(lambda path: all_pages(client, path))
    state = await server.bus_state()
    books = processor_books(data_dir)

    by_id, payments_of, notices_of = records.orders, records.payments_of, records.notices_of
    orders = list(by_id.values())

    breaches: list[str] = []
    if state["dead_letters"]:
        dead = [count for count in state["counts"] if count["outcome"] == "dead_lettered"]
        breaches.append(f"{state['dead_letters']} dead letters: {dead}")
    for placed in load.placed.values():
        order = by_id.get(placed.id)
        if order is None:
            breaches.append(f"acknowledged order {placed.id} ({placed.token}) is lost")
            continue
        promises = promise_breaches(order, placed.total, placed.token, load.cancels.get(placed.id))
        breaches.extend(f"order {placed.id} ({order['status']}): {b}" for b in promises)
    for order in orders:
        its_payments, notices = payments_of[order["id"]], notices_of[order["id"]]
        name = f"order {order['id']} ({order['status']}): "
        found = [name + b for b in order_breaches(order, its_payments, notices)]
        found += [name + b for b in ledger_breaches(order, books.get(order["id"]))]
        acknowledged = load.placed.get(order["id"])
        story = (
            f" [{acknowledged.token if acknowledged else 'unacknowledged'}, "
            f"cancel {load.cancels.get(order['id'], 'none')}, payments "
            f"{[(p['status'], p['attempts'], p['failure_reason']) for p in its_payments]}]"
        )
        breaches.extend(breach + story for breach in found)
    for order_id in (payments_of.keys() | notices_of.keys() | books.keys()) - by_id.keys():
        breaches.append(f"payment, notification or charge for unknown order {order_id}")

    checked = Checked(
        orders=len(orders),
        statuses=Counter(order["status"] for order in orders),
        payments=Counter(p["status"] for its in payments_of.values() for p in its),
        notifications=sum(len(notices) for notices in notices_of.values()),
    )
    assert not breaches, f"{len(breaches)} breaches ({checked.summary(load)}):\n" + "\n".join(
        breaches[:30]
    )
    return checked


# The tests.


@pytest.mark.parametrize("seed", range(ROUNDS))
async def test_sigkill_at_a_random_moment_loses_nothing_and_repeats_nothing(
    seed: int, tmp_path: Path
) -> None:
    rng = random.Random(seed)
    kill_at = rng.uniform(0.05, 1.5)
    with anyio.fail_after(ROUND_SECONDS):
        async with served(tmp_path) as server:
            users = await register_users(server.url)
            await server.wait_quiet()
            async with orders_pouring_in(server.url, users, rng) as load:
                await anyio.sleep(kill_at)
                await server.kill()

        recovery = ""
        if seed == RECOVERY_KILL_SEED:
            async with served(tmp_path) as recovering:
                busy = (await recovering.bus_state())["busy"]
                await recovering.kill()
            recovery = f", killed again during recovery with {busy} under way"

        async with served(tmp_path) as restarted:
            await restarted.wait_quiet()
            checked = await check_nothing_lost_nothing_twice(restarted, tmp_path, load)

    assert not load.unexpected, load.unexpected[:10]
    print(f"\nseed {seed}, kill point {kill_at:.2f}s{recovery}: {checked.summary(load)}")


async def test_sigterm_finishes_in_flight_requests_and_loses_nothing_across_a_restart(
    tmp_path: Path,
) -> None:
    rng = random.Random(1_000)
    stop_at = rng.uniform(0.3, 0.8)
    with anyio.fail_after(ROUND_SECONDS):
        async with served(tmp_path) as server:
            users = await register_users(server.url)
            await server.wait_quiet()
            async with orders_pouring_in(server.url, users, rng) as load:
                await anyio.sleep(stop_at)
                in_flight, answered = load.in_flight, load.answered
                signalled = time.monotonic()
                code = await server.terminate(timeout=GRACEFUL_SECONDS + 5)
                took = time.monotonic() - signalled
            answered_after = load.answered - answered
            log = server.log_tail()

        assert in_flight > 0, "nothing was in flight at the signal: the test proves nothing"
        assert answered_after > 0, f"none of {in_flight} requests in flight was answered"
        assert took < GRACEFUL_SECONDS, f"took {took:.1f}s to stop; log tail:\n{log}"
        assert not load.truncated, load.truncated[:10]
        assert not load.unexpected, load.unexpected[:10]

        async with served(tmp_path) as restarted:
            carried_over = (await restarted.bus_state())["busy"]
            await restarted.wait_quiet()
            checked = await check_nothing_lost_nothing_twice(restarted, tmp_path, load)

    print(
        f"\nSIGTERM at {stop_at:.2f}s, exit {code} after {took:.2f}s: {in_flight} requests in "
        f"flight, {answered_after} answered after the signal, {carried_over} under way on the "
        f"next start; {checked.summary(load)}"
    )
    assert code == 0, f"exit code {code} after SIGTERM; log tail:\n{log}"
