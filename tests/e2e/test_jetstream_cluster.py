"""`python -m app cluster --brokers 3`: three clustered nats-servers keep the events, the
stream and every consumer replicated on each (docs/decisions/0033), every process connected
to all three. One broker node SIGKILLed under load, restarted by the cluster, then another:
nothing placed is lost or charged twice, and orders keep completing meanwhile.

Driven as an operator would, over HTTP, with the command's own supervisor restarting the
broker it lost (tests/e2e/test_cluster_supervision.py holds the helpers), and as a careful
client would: a 503 with Retry-After (a module whose announcements stall while the cluster
elects a leader, say) is asked again after it, an order with the same Idempotency-Key.
"""

from __future__ import annotations

import os
import re
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import nats
import pytest

from app.split.nats import servers_of
from tests.e2e.test_cluster_supervision import Cluster, cluster_command, driven
from tests.support.seams import Driver

pytestmark = [pytest.mark.anyio, pytest.mark.services, pytest.mark.split, pytest.mark.slow]

STREAM = "SEAMS_EVENTS"
# Orders placed while a node is gone must complete within this once the others have it.
RESUME_SECONDS = 30.0
SETTLE_SECONDS = 90.0
RETRY_SECONDS = 30.0  # how long a careful client keeps asking again after 503s


class Patient:
    """A client of the gateway that asks again after a 503 with Retry-After, and counts it."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.retried: list[str] = []

    async def send(self, request: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response:
        deadline = time.monotonic() + RETRY_SECONDS
        while True:
            answer = await request()
            if answer.status_code != 503 or "retry-after" not in answer.headers:
                return answer
            assert time.monotonic() < deadline, f"503s for {RETRY_SECONDS} s: {answer.text}"
            self.retried.append(answer.json()["detail"])
            await anyio.sleep(min(float(answer.headers["retry-after"]), 1.0))

    async def place(self, user: dict[str, Any]) -> str:
        """An order, accepted once whatever 503s came first (the same Idempotency-Key)."""
        key = {"Idempotency-Key": str(uuid.uuid4()), **user["headers"]}
        body = {
            "user_id": user["id"],
            "currency": "EUR",
            "payment_token": "tok_visa",
            "items": [{"sku": "book", "quantity": 2, "unit_price": 1250}],
        }
        answer = await self.send(
            lambda: self.driver.client.post("/api/orders", json=body, headers=key)
        )
        assert answer.status_code == 201, answer.text
        order_id: str = answer.json()["id"]
        return order_id

    async def pages(self, path: str, user: dict[str, Any]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            query = {"limit": 200, **({"cursor": cursor} if cursor else {})}
            answer = await self.send(
                lambda query=query: self.driver.client.get(
                    path, params=query, headers=user["headers"]
                )
            )
            assert answer.status_code == 200, answer.text
            items += answer.json()["items"]
            cursor = answer.json()["next_cursor"]
            if cursor is None:
                return items

    async def completed(self, user: dict[str, Any], order_ids: list[str]) -> None:
        """Until every order is PAID with exactly one payment notice, as its customer sees."""
        deadline = time.monotonic() + SETTLE_SECONDS
        while True:
            status = {o["id"]: o["status"] for o in await self.pages("/api/orders", user)}
            notices = await self.pages("/api/notifications", user)
            noticed = [n["order_id"] for n in notices if n["kind"] == "payment_succeeded"]
            assert sorted(noticed) == sorted(set(noticed)), f"a notice twice: {noticed}"
            pending = [i for i in order_ids if status.get(i) != "PAID" or i not in noticed]
            if not pending:
                return
            assert time.monotonic() < deadline, f"{len(pending)} orders not PAID and noticed"
            await anyio.sleep(0.2)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def broker_urls(cluster: Cluster) -> list[str]:
    """The brokers the cluster said it started, from its first line about them."""
    found = re.search(r"broker (nats://\S+?)[,;] (?:logs|its log)", cluster.output())
    assert found, cluster.output()
    return servers_of(found.group(1))


async def replication(urls: list[str]) -> dict[str, Any]:
    """How many servers keep the events' stream and each durable, and whether every replica
    of every stream (the discovery bucket's too) is current."""
    client = await nats.connect(urls, connect_timeout=2, max_reconnect_attempts=2)
    try:
        js = client.jetstream(timeout=5)
        stream = await js.stream_info(STREAM)
        consumers = await js.consumers_info(STREAM)
        streams = await js.streams_info()
        assert stream.cluster is not None
        return {
            "stream": stream.config.num_replicas,
            "stream_peers": 1 + len(stream.cluster.replicas or []),
            "consumers": {c.name: c.config.num_replicas for c in consumers},
            "buckets": {s.config.name: s.config.num_replicas for s in streams},
            "current": all(
                s.cluster is not None
                and s.cluster.leader is not None
                and all(r.current for r in s.cluster.replicas or [])
                for s in streams
            ),
        }
    finally:
        await client.close()


async def all_current(urls: list[str], seconds: float = 30.0) -> None:
    """Until every replica of the stream has caught up (a restarted node, for one)."""
    deadline = time.monotonic() + seconds
    state: dict[str, Any] = {}
    while True:
        try:
            state = await replication(urls)
            if state["current"] and state["stream_peers"] == 3:
                return
        except Exception as error:  # a leader being elected: ask again
            state = {"error": repr(error)}
        assert time.monotonic() < deadline, f"the stream's replicas never caught up: {state}"
        await anyio.sleep(0.2)


async def keep_placing(
    client: Patient, user: dict[str, Any], placed: list[str], stop: anyio.Event
) -> None:
    """An order every 50 ms until told to stop: the load the broker nodes die under."""
    while not stop.is_set():
        placed.append(await client.place(user))
        await anyio.sleep(0.05)


async def kill_broker(cluster: Cluster, name: str) -> None:
    """SIGKILL the broker node's newest process; until the cluster has started it again."""
    started = len(cluster.pids(name))
    os.kill(cluster.pids(name)[-1], signal.SIGKILL)
    await cluster.wait_for(rf"{re.escape(name)} exited with -9 \(SIGKILL\); restarting in")
    deadline = time.monotonic() + RESUME_SECONDS
    while len(cluster.pids(name)) == started:
        assert time.monotonic() < deadline, cluster.output()
        await anyio.sleep(0.1)


async def test_broker_nodes_die_one_after_another_under_load_and_nothing_is_lost_or_doubled(
    tmp_path: Path,
) -> None:
    with cluster_command(
        tmp_path, "--data-dir", str(tmp_path / "data"), "--brokers", "3"
    ) as cluster:
        async with driven(cluster) as driver:
            urls = broker_urls(cluster)
            client = Patient(driver)
            user = await driver.register("Noor")
            placed = [await client.place(user) for _ in range(5)]
            await client.completed(user, placed)
            state = await replication(urls)
            assert state["stream"] == 3 and state["stream_peers"] == 3, state
            assert state["consumers"] and set(state["consumers"].values()) == {3}, state
            assert set(state["buckets"].values()) == {3}, state  # discovery's too

            stop = anyio.Event()
            async with anyio.create_task_group() as load:
                load.start_soon(keep_placing, client, user, placed, stop)
                await anyio.sleep(1.0)
                await kill_broker(cluster, "nats.1")
                await anyio.sleep(1.0)
                await all_current(urls)
                await kill_broker(cluster, "nats.2")
                await anyio.sleep(1.0)
                stop.set()

            started = time.monotonic()
            last = [await client.place(user) for _ in range(5)]  # hops resume
            await client.completed(user, last)
            resumed = time.monotonic() - started
            await client.completed(user, placed + last)
            payments = await client.pages("/api/payments", user)

        charged = sorted(p["order_id"] for p in payments if p["status"] == "SUCCEEDED")
        assert charged == sorted(placed + last), "an order charged twice or never"
        assert resumed < RESUME_SECONDS
        assert len(cluster.pids("nats.1")) == 2 and len(cluster.pids("nats.2")) == 2
        assert len(cluster.pids("nats.3")) == 1 and len(cluster.pids("payments")) == 1
        print(
            f"{len(client.retried)} answers 503 asked again ({set(client.retried)}); "
            f"{len(placed) + len(last)} orders; 5 placed after both kills completed in "
            f"{resumed:.2f} s"
        )
        assert cluster.stop() == 0, cluster.output()
