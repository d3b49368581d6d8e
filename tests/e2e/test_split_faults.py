"""The split system keeps the saga's books straight when its parts fail under load.

Real processes over a private NATS (tests/support/split.py): payments in replicas sharing
one durable consumer per event type. While concurrent clients place orders with every
test card and cancel some of them at random moments, a payments replica is SIGKILLed with
charges in flight, or the broker is restarted on its data dir. Once every process is quiet:
every acknowledged order settled (PAID, CANCELLED or REFUNDED; none PENDING), has exactly
one payment for its total, the ones the customer paid one "payment received" notification
(and refunded ones one "payment refunded"), a cancelled order holds no capture, no order
was charged twice, and the processor's own ledger (the bank's side, read from the payments
database) holds money for exactly the PAID orders. Without faults, each OrderPlaced is
handled by exactly one replica.
"""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import httpx
import pytest

from tests.support.invariants import (
    ledger_breaches,
    order_breaches,
    promise_breaches,
    read_records,
)
from tests.support.split import Running, Split, handled_count, split_system

pytestmark = [pytest.mark.anyio, pytest.mark.services, pytest.mark.split, pytest.mark.slow]

TOKENS = ("tok_slow", "tok_visa", "tok_chargeDeclined", "tok_processing_error")
USERS = 4
ORDERS = 60
CLIENTS = 12
CANCEL_SHARE = 0.3  # of the orders, cancelled by their client a random moment after placing
CANCEL_WITHIN_SECONDS = 0.8
FAULT_ENV = {
    "APP_SLOW_CARD_SECONDS": "0.2",
    # A killed replica's unacked messages come back after the ack wait: seconds, not 30.
    "APP_BUS_ACK_WAIT_SECONDS": "3",
    # Outbox rows a killed replica committed but did not publish: another replica's sweep.
    "APP_OUTBOX_SWEEP_SECONDS": "1",
    # A killed replica's charges are adopted by another once untouched for
    # 2 x (slow card + this) + 5 s (app/modules/payments/module.py): 6.4 to 7 s here.
    "APP_PAYMENT_RETRY_MAX_SECONDS": "0.5",
}
# The kill waits (bounded) for this many charges in flight (PROCESSING payments), then
# takes the replica with the most work under way.
KILL_WHEN_CHARGING = 3
KILL_SLOW_CARD_SECONDS = "0.5"  # slow charges long enough that the kill meets some
SETTLE_SECONDS = 90.0  # generous: a redelivery waits for the ack wait; the machine is shared
TEST_SECONDS = 240.0
RETRY_503 = 20  # a 503 (no live instance, e.g. while discovery catches up) is retried


@dataclass(frozen=True)
class Planned:
    """One order a client will place: the card, the items, and when (if) to cancel it."""

    user: int
    token: str
    items: list[tuple[str, int, int]]
    cancel_after: float | None

    @property
    def total(self) -> int:
        return sum(quantity * price for _, quantity, price in self.items)


@dataclass(frozen=True)
class Placed:
    id: str
    total: int
    token: str


@dataclass
class Load:
    """What the clients were told."""

    placed: dict[str, Placed] = field(default_factory=dict)
    cancels: dict[str, int] = field(default_factory=dict)  # order id -> 200 or 202
    unavailable: int = 0  # 503s answered (and retried): no live instance for a moment
    unexpected: list[str] = field(default_factory=list)


def plan_orders(rng: random.Random, count: int = ORDERS) -> list[Planned]:
    return [
        Planned(
            user=rng.randrange(USERS),
            token=TOKENS[n % len(TOKENS)],  # every card, evenly
            items=[
                (f"sku-{rng.randrange(20)}", rng.randint(1, 5), rng.randint(100, 10_000))
                for _ in range(rng.randint(1, 3))
            ],
            cancel_after=(
                rng.uniform(0, CANCEL_WITHIN_SECONDS) if rng.random() < CANCEL_SHARE else None
            ),
        )
        for n in range(count)
    ]


async def post(split: Split, load: Load, path: str, **kw: Any) -> httpx.Response:
    """POST, retrying (bounded) what the gateway answers 503 with Retry-After, as a client
    would. Every order carries an Idempotency-Key, so a retry never places two."""
    for _ in range(RETRY_503):
        response = await split.client.post(path, **kw)
        if response.status_code != 503:
            return response
        load.unavailable += 1
        await anyio.sleep(0.25)
    return response


async def place_and_cancel(
    split: Split, users: list[dict[str, Any]], planned: Planned, load: Load
) -> None:
    user = users[planned.user]
    body = {
        "user_id": user["id"],
        "currency": "EUR",
        "payment_token": planned.token,
        "items": [{"sku": s, "quantity": q, "unit_price": p} for s, q, p in planned.items],
    }
    headers = {**user["headers"], "Idempotency-Key": uuid.uuid4().hex}
    response = await post(split, load, "/api/orders", json=body, headers=headers)
    order = response.json() if response.status_code == 201 else {}
    if (order.get("status"), order.get("total")) != ("PENDING", planned.total):
        load.unexpected.append(f"place ({planned.total}): {response.status_code} {response.text}")
        return
    load.placed[order["id"]] = Placed(order["id"], planned.total, planned.token)
    if planned.cancel_after is None:
        return
    await anyio.sleep(planned.cancel_after)
    cancel = f"/api/orders/{order['id']}/cancel"
    response = await post(split, load, cancel, headers=user["headers"])
    if response.status_code in (200, 202):
        load.cancels[order["id"]] = response.status_code
    elif response.status_code != 409:  # 409: already CANCELLED, e.g. a declined card
        load.unexpected.append(f"cancel {order['id']}: {response.status_code} {response.text}")


async def pour(split: Split, users: list[dict[str, Any]], plan: list[Planned], load: Load) -> None:
    """CLIENTS clients working through the plan concurrently."""
    queue = iter(plan)

    async def client() -> None:
        for planned in queue:
            await place_and_cancel(split, users, planned, load)

    async with anyio.create_task_group() as clients:
        for _ in range(CLIENTS):
            clients.start_soon(client)


async def when(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} after {timeout}s")
        await anyio.sleep(0.01)


async def register_users(split: Split) -> list[dict[str, Any]]:
    return [await split.register(f"Fault{n}") for n in range(USERS)]


# Checking the books.


async def processor_books(split: Split) -> dict[str, tuple[str | None, bool]]:
    """The simulated processor's ledger, read-only from the payments database: order id ->
    (outcome, refunded). It stands for the bank, which no API of ours may rewrite."""
    url = split.store_urls["payments"].replace("postgresql+asyncpg://", "postgresql://", 1)
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch("SELECT order_id, outcome, refunded FROM processor_ledger")
    finally:
        await connection.close()
    return {row["order_id"]: (row["outcome"], bool(row["refunded"])) for row in rows}


async def check_the_books(split: Split, load: Load) -> str:
    """Every invariant; AssertionError listing each breach with the processes' logs."""
    records = await read_records(split.all_pages)
    orders, payments_of, notices_of = records.orders, records.payments_of, records.notices_of
    books = await processor_books(split)
    dead = await split.dead_letters()

    breaches = [f"dead letters: {dead}"] if any(dead.values()) else []
    for order_id in (payments_of.keys() | notices_of.keys() | books.keys()) - orders.keys():
        breaches.append(f"a payment, notification or charge for unknown order {order_id}")
    for placed in load.placed.values():
        order = orders.get(placed.id)
        if order is None:
            breaches.append(f"acknowledged order {placed.id} ({placed.token}) is lost")
            continue
        story = (
            f" [{placed.token}, cancel {load.cancels.get(placed.id, 'none')}, payments "
            f"{[(p['status'], p['attempts'], p['failure_reason']) for p in payments_of[placed.id]]}"
            f", notifications {sorted(notices_of[placed.id])}, ledger {books.get(placed.id)}]"
        )
        found = order_breaches(order, payments_of[placed.id], notices_of[placed.id])
        found += ledger_breaches(order, books.get(placed.id))
        found += promise_breaches(order, placed.total, placed.token, load.cancels.get(placed.id))
        breaches.extend(f"order {placed.id} ({order['status']}): {b}{story}" for b in found)

    statuses = Counter(orders[p]["status"] for p in load.placed if p in orders)
    summary = (
        f"{len(load.placed)} acknowledged: {dict(statuses)}; {len(load.cancels)} cancels "
        f"acknowledged {dict(Counter(load.cancels.values()))}"
    )
    assert not breaches, (
        f"{len(breaches)} breaches ({summary}):\n" + "\n".join(breaches[:30]) + "\n" + split.logs()
    )
    return summary


async def settled(split: Split) -> None:
    """Until every process is quiet with no order PENDING, bounded. Quiet alone is not
    enough after a kill: the charges the dead replica had under way wait, PROCESSING, until
    a survivor sees them untouched long enough to adopt them."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        try:
            await split.settle(max(deadline - time.monotonic(), 1.0))
        except AssertionError as error:
            raise AssertionError(f"{error}\n{split.logs()}") from None
        pending = await split.all_pages("/api/orders", status="PENDING")
        if not pending or time.monotonic() > deadline:
            return  # the books say which stayed PENDING, and why
        await anyio.sleep(0.5)


async def kill_a_busy_payments_replica(split: Split, load: Load, killed: dict[str, Any]) -> None:
    """Once a quarter of the orders are in and charges are in flight, SIGKILL the payments
    replica with the most work under way; note what it had handled until then."""
    await when(lambda: len(load.placed) >= ORDERS // 4, 60, "a quarter placed")
    any_charge_after = time.monotonic() + 5
    with anyio.fail_after(30):
        while True:
            charging, states = await charges_and_states(split)
            name, state = max(states.items(), key=lambda item: item[1]["busy"])
            enough = charging >= KILL_WHEN_CHARGING or time.monotonic() > any_charge_after
            if enough and charging > 0 and state["busy"] > 0:
                break
            await anyio.sleep(0.01)
    split.kill(name)
    killed.update(name=name, busy=state["busy"], charging=charging, state=state)
    killed["at"] = len(load.placed)


async def charges_and_states(split: Split) -> tuple[int, dict[str, dict[str, Any]]]:
    """How many payments are PROCESSING, and each payments replica's bus state, at once."""
    states: dict[str, dict[str, Any]] = {}
    found: list[dict[str, Any]] = []

    async def state_of(running: Running) -> None:
        states[running.child.name] = await split.bus_state(running)

    async def payments() -> None:
        found.extend(await split.all_pages("/api/payments"))

    async with anyio.create_task_group() as asking:
        asking.start_soon(payments)
        for running in split.replicas("payments"):
            asking.start_soon(state_of, running)
    return sum(p["status"] == "PROCESSING" for p in found), states


# The tests.


async def test_killing_a_payments_replica_under_load_loses_no_order_and_charges_none_twice(
    tmp_path: Path,
) -> None:
    rng = random.Random(20_261_124)
    plan = plan_orders(rng)
    started = time.monotonic()
    with anyio.fail_after(TEST_SECONDS):
        async with split_system(
            tmp_path,
            replicas={"payments": 3},
            **{**FAULT_ENV, "APP_SLOW_CARD_SECONDS": KILL_SLOW_CARD_SECONDS},
        ) as split:
            users = await register_users(split)
            await split.settle()
            load = Load()
            killed: dict[str, Any] = {}

            async with anyio.create_task_group() as faults:
                faults.start_soon(kill_a_busy_payments_replica, split, load, killed)
                await pour(split, users, plan, load)
            await settled(split)
            summary = await check_the_books(split, load)
            survivors = await split.handled("OrderPlaced", "payments")
            adopted = sum(
                r.log_path.read_text(errors="replace").count("adopting the charge")
                for r in split.replicas("payments")
            )

    assert not load.unexpected, load.unexpected[:10]
    assert len(load.placed) == ORDERS, f"only {len(load.placed)} of {ORDERS} acknowledged"
    assert killed["at"] < ORDERS, "the replica was killed after the last order: not mid-load"
    spread = {
        **survivors,
        killed["name"]: handled_count(killed["state"], "OrderPlaced", "payments"),
    }
    assert sum(1 for n in spread.values() if n > 0) > 1, (
        f"OrderPlaced was not spread over the replicas: {spread}"
    )
    print(
        f"\nkilled {killed['name']} with {killed['busy']} under way after {killed['at']} "
        f"orders, {killed['charging']} charges in flight in all; OrderPlaced handled per "
        f"replica {spread} (the killed one's until its death, redeliveries counted again); "
        f"{adopted} abandoned charges adopted by survivors; {summary}; "
        f"{load.unavailable} 503s retried; {time.monotonic() - started:.1f}s"
    )


async def test_restarting_the_broker_mid_flow_loses_no_order_and_charges_none_twice(
    tmp_path: Path,
) -> None:
    rng = random.Random(7)
    plan = plan_orders(rng)
    started = time.monotonic()
    with anyio.fail_after(TEST_SECONDS):
        async with split_system(tmp_path, replicas={"payments": 2}, **FAULT_ENV) as split:
            users = await register_users(split)
            await split.settle()
            load = Load()
            restarted: dict[str, Any] = {}

            async def restart_the_broker() -> None:
                """Once a third of the orders are in, stop the broker and start it again on
                its port and data dir; the clients keep placing orders meanwhile."""
                await when(lambda: len(load.placed) >= ORDERS // 3, 60, "a third placed")
                restarted["before"] = len(load.placed)
                await anyio.to_thread.run_sync(split.nats.restart)
                restarted["after"] = len(load.placed)

            async with anyio.create_task_group() as faults:
                faults.start_soon(restart_the_broker)
                await pour(split, users, plan, load)
            await settled(split)
            summary = await check_the_books(split, load)

    assert not load.unexpected, load.unexpected[:10]
    assert len(load.placed) == ORDERS, f"only {len(load.placed)} of {ORDERS} acknowledged"
    assert restarted["after"] < ORDERS, "every order was in before the broker came back"
    print(
        f"\nbroker restarted after {restarted['before']} orders, back after "
        f"{restarted['after']}; {summary}; {load.unavailable} 503s retried; "
        f"{time.monotonic() - started:.1f}s"
    )


async def test_each_order_placed_is_handled_by_exactly_one_payments_replica(
    tmp_path: Path,
) -> None:
    """No fault, two replicas, the default ack wait: the replicas' handled OrderPlaced
    counts add up to the orders placed (none handled twice, none lost), both took some."""
    count = 40
    plan = plan_orders(random.Random(40), count)
    with anyio.fail_after(TEST_SECONDS):
        async with split_system(tmp_path, replicas={"payments": 2}) as split:
            users = await register_users(split)
            load = Load()
            await pour(split, users, plan, load)
            await settled(split)
            summary = await check_the_books(split, load)
            handled = await split.handled("OrderPlaced", "payments")
            assert sum(handled.values()) == count, (
                f"{count} orders placed, OrderPlaced handled per replica {handled}\n{split.logs()}"
            )
            assert all(n > 0 for n in handled.values()), f"a replica handled none: {handled}"

    assert not load.unexpected, load.unexpected[:10]
    assert len(load.placed) == count, f"only {len(load.placed)} of {count} acknowledged"
    print(f"\n{count} orders: OrderPlaced handled per replica {handled}; {summary}")
