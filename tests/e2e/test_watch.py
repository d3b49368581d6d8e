"""The watch through the gateway (issue 14): an order's journey as an API, the bus live over
Server-Sent Events, and who may see which flow."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import pytest
from litestar import Litestar

from tests.support.seams import Driver, Seams, fast_settings, running

pytestmark = pytest.mark.anyio


@pytest.fixture
async def seams() -> AsyncIterator[Seams]:
    async with running(fast_settings(ephemeral="true", watch_heartbeat_seconds="0.2")) as s:
        yield s


def handled_by(journey: dict[str, Any]) -> set[tuple[str, str]]:
    return {(s["type"], s["consumer"]) for s in journey["steps"] if s["kind"] == "handled"}


async def journey_until(
    seams: Driver,
    order_id: str,
    headers: dict[str, str],
    done: Callable[[dict[str, Any]], bool],
    timeout: float = 5.0,
) -> dict[str, Any]:
    """The order's journey once `done` holds of it; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    status = 0
    while time.monotonic() < deadline:
        response = await seams.client.get(f"/api/orders/{order_id}/journey", headers=headers)
        last, status = response.json(), response.status_code
        if response.status_code == 200 and done(last):
            return dict(last)
        await asyncio.sleep(0.02)
    raise AssertionError(
        f"the journey of {order_id} did not complete in {timeout}s: {status} {last}"
    )


PAID = {
    ("OrderPlaced", "payments"),
    ("PaymentSucceeded", "orders"),
    ("PaymentSucceeded", "notifications"),
}


async def test_a_paid_order_s_journey_is_its_request_its_events_and_their_handling(
    seams: Seams,
) -> None:
    user = await seams.register("Ada")
    order = await seams.place(user, "tok_visa")
    journey = await journey_until(
        seams, order["id"], user["headers"], lambda j: handled_by(j) >= PAID
    )
    request, *events = journey["steps"]
    assert (request["kind"], request["method"], request["path"], request["status"]) == (
        "request",
        "POST",
        "/api/orders",
        201,
    )
    assert request["user_id"] == user["id"]
    assert journey["correlation_id"] == request["request_id"]
    published = [s["type"] for s in events if s["kind"] == "published"]
    assert published == ["OrderPlaced", "PaymentSucceeded"]
    assert [s["seq"] for s in events] == sorted(s["seq"] for s in events)
    for step in events:
        assert step["correlation_id"] == request["request_id"]
        assert step["process"] == "monolith"
        if step["kind"] == "handled":
            assert step["attempt"] == 1 and step["ms"] >= 0 and step["hop_ms"] >= 0
    assert (journey["retries"], journey["dead_letters"]) == (0, 0)
    assert "not an audit log" in journey["note"]


async def test_a_declined_order_s_journey_shows_the_compensation(seams: Seams) -> None:
    user = await seams.register("Ada")
    order = await seams.place(user, "tok_chargeDeclined")
    journey = await journey_until(
        seams,
        order["id"],
        user["headers"],
        lambda j: ("PaymentFailed", "orders") in handled_by(j),
    )
    assert ("PaymentSucceeded", "notifications") not in handled_by(journey)
    assert (await seams.get(f"/api/orders/{order['id']}"))["status"] == "CANCELLED"


async def test_someone_else_s_journey_is_a_404_an_admin_sees_it(seams: Seams) -> None:
    ada, bob = await seams.register("Ada"), await seams.register("Bob")
    order = await seams.place(ada, "tok_visa")
    await seams.settle()
    refused = await seams.client.get(f"/api/orders/{order['id']}/journey", headers=bob["headers"])
    assert refused.status_code == 404
    assert refused.headers["content-type"] == "application/problem+json"
    assert "kept in memory for the last 200" in refused.json()["detail"]
    unknown = await seams.client.get("/api/orders/nope/journey", headers=ada["headers"])
    assert unknown.status_code == 404
    admin = await seams.get(f"/api/orders/{order['id']}/journey")  # the test client's admin
    assert handled_by(admin) >= PAID


async def test_the_journey_route_is_the_gateway_s_and_the_order_route_the_module_s(
    seams: Seams,
) -> None:
    user = await seams.register("Ada")
    order = await seams.place(user, "tok_visa")
    assert (await seams.get(f"/api/orders/{order['id']}"))["id"] == order["id"]
    topology = await seams.get("/api/topology")
    journey_route = {"method": "GET", "path": "/api/orders/{aggregate_id}/journey"}
    assert journey_route in topology["gateway"]
    [orders] = [m for m in topology["modules"] if m["name"] == "orders"]
    assert journey_route not in orders["routes"]
    spec = await seams.get("/schema/openapi.json")
    assert spec["paths"]["/api/orders/{aggregate_id}/journey"]["get"]["tags"] == ["gateway"]


async def test_the_watch_state_counts_per_consumer(seams: Seams) -> None:
    user = await seams.register("Ada")
    await seams.place(user, "tok_visa")
    await seams.settle()
    state = await seams.get("/api/watch/state")
    payments = next(c for c in state["consumers"] if c["consumer"] == "payments")
    assert payments["handled"] >= 1
    assert (payments["paused"], payments["broken"], payments["backlog"]) == (False, False, 0)
    assert state["replay_limit"] == 500 and state["journey_limit"] == 200


class Sse:
    """A Server-Sent Events stream read straight from the ASGI app (httpx's ASGI transport
    returns a response only once its body is complete, which a stream never is)."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self._chunks: asyncio.Queue[bytes] = asyncio.Queue()
        self._buffer = b""
        self.ended = asyncio.Event()
        self.started = asyncio.Event()
        self.flowing = asyncio.Event()  # cleared: the client stops reading (send blocks)
        self.flowing.set()
        self.writes = 0  # body chunks the server sent

    async def receive_body(self, body: bytes) -> None:
        await self.flowing.wait()
        self.writes += 1
        self._chunks.put_nowait(body)

    async def event(self, timeout: float = 5.0) -> dict[str, str]:
        """The next message: its fields (`event`, `id`, `data`, or `comment`)."""
        while b"\r\n\r\n" not in self._buffer:
            self._buffer += await asyncio.wait_for(self._chunks.get(), timeout)
        raw, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        fields: dict[str, str] = {}
        for line in raw.decode().split("\r\n"):
            name, _, value = line.partition(": ")
            fields[name or "comment"] = value
        return fields

    async def until(self, wanted: Callable[[dict[str, str]], bool]) -> dict[str, str]:
        while True:
            message = await self.event()
            if wanted(message):
                return message


@asynccontextmanager
async def stream(app: Litestar, headers: dict[str, str]) -> AsyncIterator[Sse]:
    sse = Sse()
    gone = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            sse.status = message["status"]
            sse.headers = {k.decode(): v.decode() for k, v in message["headers"]}
            sse.started.set()
        elif message.get("body"):
            await sse.receive_body(message["body"])
        if message["type"] == "http.response.body" and not message.get("more_body"):
            gone.set()  # as a server does: once the answer is complete, receive says so

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/api/watch/stream",
        "raw_path": b"/api/watch/stream",
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver.local", 80),
    }
    task = asyncio.create_task(app(scope, receive, send))  # type: ignore[arg-type]
    task.add_done_callback(lambda _: sse.ended.set())
    await asyncio.wait_for(sse.started.wait(), 5)
    try:
        yield sse
    finally:
        gone.set()  # the client goes away
        await asyncio.wait_for(task, 5)


def data(message: dict[str, str]) -> dict[str, Any]:
    decoded: dict[str, Any] = msgspec.json.decode(message["data"])
    return decoded


async def test_the_stream_replays_then_pushes_only_the_caller_s_flows(seams: Seams) -> None:
    ada, bob = await seams.register("Ada"), await seams.register("Bob")
    first = await seams.place(ada, "tok_visa")
    await seams.place(bob, "tok_visa")
    await seams.settle()
    async with stream(seams.app, ada["headers"]) as sse:
        assert sse.status == 200
        assert sse.headers["content-type"].startswith("text/event-stream")
        seen = [await sse.until(lambda m: m.get("event") == "published")]
        assert data(seen[0])["aggregate_id"] == first["id"]  # the replay

        second = await seams.place(ada, "tok_visa")  # then what happens now
        while True:
            message = await sse.event()
            if "event" not in message:
                continue
            seen.append(message)
            observation = data(message)
            assert message["event"] == observation["kind"]
            assert message["id"] == str(observation["seq"])
            if (observation["kind"], observation.get("consumer")) == (
                "handled",
                "notifications",
            ) and (observation["correlation_id"] != data(seen[0])["correlation_id"]):
                break
        correlations = {data(m)["correlation_id"] for m in seen}
        requests = [data(m) for m in seen if m["event"] == "request"]
        assert {r["user_id"] for r in requests} == {ada["id"]}
        assert len(correlations) == 2  # ada's two orders; nothing of bob's
        assert any(data(m).get("aggregate_id") == second["id"] for m in seen)


async def test_a_quiet_stream_sends_a_heartbeat_and_a_client_that_leaves_unsubscribes(
    seams: Seams,
) -> None:
    async with stream(seams.app, dict(seams.client.headers)) as sse:
        await sse.until(lambda m: m.get("comment") == "keep-alive")
        state = await seams.get("/api/watch/state")
        assert len(state["subscribers"]) == 1
    assert (await seams.get("/api/watch/state"))["subscribers"] == []


async def test_a_client_that_stops_reading_is_told_what_it_missed() -> None:
    settings = fast_settings(
        ephemeral="true", watch_subscriber_buffer="2", watch_heartbeat_seconds="0.2"
    )
    async with running(settings) as seams, stream(seams.app, dict(seams.client.headers)) as sse:
        await sse.event()  # the greeting
        sse.flowing.clear()
        user = await seams.register("Ada")
        await seams.place(user, "tok_visa")
        await seams.settle()
        sse.flowing.set()
        dropped = await sse.until(lambda m: m.get("event") == "dropped")
        reported = data(dropped)["dropped"]
        assert reported > 0
        state = await seams.get("/api/watch/state")
        # An observation missed after that notice (a loaded machine can let one arrive while
        # the stream catches up) is told at the next notice, at the latest with the next
        # heartbeat: the stream ends up saying exactly what the state counts.
        async with asyncio.timeout(5):
            while reported < state["dropped"]:
                notice = await sse.until(lambda m: m.get("event") == "dropped")
                reported = data(notice)["dropped"]
        assert reported == state["dropped"]


async def test_a_burst_of_observations_leaves_in_a_few_writes_not_one_each(
    seams: Seams,
) -> None:
    async with stream(seams.app, dict(seams.client.headers)) as sse:
        await sse.event()  # the greeting
        writes_before = sse.writes
        user = await seams.register("Ada")
        for _ in range(5):
            await seams.place(user, "tok_visa")
        await seams.settle()
        seen = 0
        while "event" in await sse.event():  # until a keep-alive: the burst is over
            seen += 1
        writes = sse.writes - writes_before
        assert seen >= 5 * 6  # each order: request, 2 published, 3 handled at least
        assert writes < seen / 2, f"{writes} writes for {seen} observations"


async def test_an_open_stream_ends_when_the_app_stops() -> None:
    async with running(fast_settings(ephemeral="true")) as seams:
        opened = stream(seams.app, dict(seams.client.headers))
        sse = await opened.__aenter__()
        await sse.event()
    await asyncio.wait_for(sse.ended.wait(), 2)  # the lifespan's stop ended it
    await opened.__aexit__(None, None, None)
