"""The bus over NATS JetStream, against a private nats-server: envelopes arrive intact,
every consuming module gets every event, replicas share a module's work, a message a
replica abandons reaches another, the broker dedups re-sends, a malformed message is
terminated, and a Bus over NATS keeps each aggregate's order."""

from __future__ import annotations

import asyncio
import logging
import random
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
import nats
import pytest
from nats.aio.client import Client

from app.bus import Bus, DeliveryStore, Envelope, Event, RetryPolicy
from app.bus.envelope import wrap
from app.bus.transport import InProcessTransport
from app.main import create_transport
from app.split.nats_transport import NatsTransport
from tests.support.nats import (
    NatsServer,
    broker_link,
    nats_server,
    nats_transport,
    private_names,
    settle,
)
from tests.support.seams import fast_settings
from tests.support.waits import until

pytestmark = [pytest.mark.anyio, pytest.mark.services]

WAIT_SECONDS = 10.0


class Pinged(Event, frozen=True, kw_only=True):
    wire_name = "Pinged"
    version = 1

    n: int


def envelope(
    n: int,
    aggregate: str = "a",
    sequence: int = 1,
    *,
    causation_id: str | None = None,
    traceparent: str | None = None,
) -> Envelope:
    return wrap(
        Pinged(n=n),
        producer="test",
        aggregate_id=aggregate,
        sequence=sequence,
        correlation_id=f"corr-{n}",
        causation_id=causation_id,
        traceparent=traceparent,
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    with nats_server(tmp_path_factory.mktemp("nats")) as running:
        yield running


class Recorder:
    """A sink that records what arrives and answers at once (or, with `hold`, never)."""

    def __init__(self, *, hold: bool = False) -> None:
        self.seen: list[Envelope] = []
        self.hold = hold
        self.pending: list[asyncio.Future[None]] = []

    def sink(self, envelope: Envelope) -> asyncio.Future[None]:
        self.seen.append(envelope)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.hold:
            self.pending.append(done)
        else:
            done.set_result(None)
        return done

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.seen]


@asynccontextmanager
async def broker(url: str) -> AsyncIterator[Client]:
    """A plain client, to look at the stream or put raw bytes on it."""
    client = await nats.connect(url)
    try:
        yield client
    finally:
        await client.close()


@asynccontextmanager
async def started(*transports: NatsTransport) -> AsyncIterator[None]:
    async with AsyncExitStack() as stack:
        await asyncio.gather(*(t.start() for t in transports))
        for transport in transports:
            stack.push_async_callback(transport.stop)
        yield


async def drained(transport: NatsTransport) -> None:
    """Until the broker holds nothing undelivered or unacked for this transport."""
    deadline = time.monotonic() + WAIT_SECONDS
    while transport.in_flight or await transport.backlog():
        assert time.monotonic() < deadline, "the broker still holds messages"
        await anyio.sleep(0.005)


async def test_the_composition_root_picks_the_transport_from_the_bus_url() -> None:
    assert isinstance(create_transport(fast_settings(bus_url="memory://")), InProcessTransport)
    chosen = create_transport(fast_settings(bus_url="nats://127.0.0.1:4999"))
    assert isinstance(chosen, NatsTransport)
    assert chosen.url == "nats://127.0.0.1:4999"
    # No message outlives the inbox id that makes its redelivery a no-op.
    kept = create_transport(fast_settings(bus_url="nats://127.0.0.1:4999", retention_seconds=60))
    assert isinstance(kept, NatsTransport) and kept.max_age_seconds == 60
    with pytest.raises(ValueError, match="APP_BUS_URL"):
        create_transport(fast_settings(bus_url="kafka://somewhere"))


async def test_an_envelope_arrives_intact_and_its_ids_travel_in_headers(
    server: NatsServer,
) -> None:
    transport = nats_transport(server.url)
    recorder = Recorder()
    transport.bind("notifications", "Pinged", recorder.sink)
    sent = envelope(
        7,
        "order-1",
        3,
        causation_id="cause-1",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    async with started(transport), broker(server.url) as client:
        await transport.publish(sent)
        await until(lambda: len(recorder.seen) == 1, "the envelope")
        stored = await client.jetstream().get_last_msg(
            transport.stream, transport.subject_for("Pinged")
        )

    assert recorder.seen == [sent]
    assert stored.headers is not None
    assert {k: v for k, v in stored.headers.items() if k != "Nats-Expected-Stream"} == {
        "Nats-Msg-Id": sent.id,
        "Seams-Event-Type": "Pinged",
        "Seams-Aggregate-Id": "order-1",
        "Seams-Correlation-Id": "corr-7",
        "Seams-Causation-Id": "cause-1",
        "traceparent": sent.traceparent,
    }


async def test_every_consuming_module_gets_every_event(server: NatsServer) -> None:
    transport = nats_transport(server.url)
    orders, notifications = Recorder(), Recorder()
    transport.bind("orders", "Pinged", orders.sink)
    transport.bind("notifications", "Pinged", notifications.sink)
    sent = [envelope(n, f"agg-{n}") for n in range(10)]
    async with started(transport):
        for one in sent:
            await transport.publish(one)
        await until(lambda: len(orders.seen) == len(notifications.seen) == 10, "both modules")
        await drained(transport)

    assert orders.seen == sent
    assert notifications.seen == sent


async def test_replicas_of_a_module_share_its_messages_and_handle_each_once(
    server: NatsServer,
) -> None:
    names = private_names()
    first, second = nats_transport(server.url, **names), nats_transport(server.url, **names)
    left, right = Recorder(), Recorder()
    first.bind("payments", "Pinged", left.sink)
    second.bind("payments", "Pinged", right.sink)  # the same durable, bound concurrently
    sent = [envelope(n, f"agg-{n}") for n in range(60)]
    async with started(first, second):
        await asyncio.gather(*(first.publish(one) for one in sent))
        await until(lambda: len(left.seen) + len(right.seen) >= 60, "all 60 messages")
        await drained(first)
        await drained(second)

    assert sorted(left.ids + right.ids) == sorted(e.id for e in sent)  # each exactly once


async def test_a_replica_that_stops_mid_handling_hands_the_message_to_another(
    server: NatsServer,
) -> None:
    names = private_names()
    stopping = nats_transport(server.url, **names)  # ack wait 30 s: only a nak is this fast
    other = nats_transport(server.url, **names)
    stuck, fine = Recorder(hold=True), Recorder()
    stopping.bind("payments", "Pinged", stuck.sink)
    other.bind("payments", "Pinged", fine.sink)
    sent = envelope(1)

    await stopping.start()
    try:
        await stopping.publish(sent)
        await until(lambda: len(stuck.seen) == 1, "the first replica to take it")
        async with started(other):
            await stopping.stop()
            await until(lambda: fine.ids == [sent.id], "the other replica", timeout=5)
            await drained(other)
    finally:
        await stopping.stop()


async def test_a_message_whose_replica_died_is_redelivered_to_another(
    server: NatsServer,
) -> None:
    names = {**private_names(), "ack_wait_seconds": 1.0}
    async with broker_link(server.url) as link:
        dying, other = nats_transport(link.url, **names), nats_transport(server.url, **names)
        stuck, fine = Recorder(hold=True), Recorder()
        dying.bind("payments", "Pinged", stuck.sink)
        other.bind("payments", "Pinged", fine.sink)
        sent = envelope(1)

        await dying.start()
        try:
            await dying.publish(sent)
            await until(lambda: len(stuck.seen) == 1, "the replica that will die")
            async with started(other):
                link.cut()  # as when its process dies: nothing is acked or nak'ed
                await until(lambda: fine.ids == [sent.id], "redelivery after the ack wait")
                await drained(other)
        finally:
            await dying.stop()


@pytest.mark.slow  # holds a message for 2.5 ack waits
async def test_a_slow_handling_is_kept_alive_not_redelivered(server: NatsServer) -> None:
    transport = nats_transport(server.url, ack_wait_seconds=0.8)
    slow = Recorder(hold=True)
    transport.bind("payments", "Pinged", slow.sink)
    async with started(transport):
        await transport.publish(envelope(1))
        await until(lambda: len(slow.seen) == 1, "the message")
        await anyio.sleep(2.0)  # 2.5 ack waits: the broker would have redelivered twice
        slow.pending[0].set_result(None)
        await drained(transport)

    assert len(slow.seen) == 1
    assert transport.received == 1


async def test_the_same_envelope_published_again_is_stored_once(server: NatsServer) -> None:
    transport = nats_transport(server.url)
    recorder = Recorder()
    transport.bind("payments", "Pinged", recorder.sink)
    sent = envelope(1)
    async with started(transport), broker(server.url) as client:
        for _ in range(3):  # a relay that re-sends after a lost PubAck or a restart
            await transport.publish(sent)
        await until(lambda: len(recorder.seen) == 1, "the message")
        await drained(transport)
        info = await client.jetstream().stream_info(transport.stream)

    assert info.state.messages == 1
    assert recorder.ids == [sent.id]


async def test_a_malformed_message_is_terminated_and_the_next_one_still_flows(
    server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    transport = nats_transport(server.url)
    recorder = Recorder()
    transport.bind("payments", "Pinged", recorder.sink)
    good = envelope(2)
    async with started(transport), broker(server.url) as client:
        js = client.jetstream()
        with caplog.at_level(logging.ERROR, "app.bus.nats"):
            await js.publish(transport.subject_for("Pinged"), b'{"not": "an envelope"')
            await transport.publish(good)
            await until(lambda: recorder.ids == [good.id], "the good message")
            await drained(transport)
        info = await js.consumer_info(transport.stream, "payments-Pinged")

    assert info.num_redelivered == 0  # terminated, not redelivered
    assert transport.received == 2
    assert any("malformed" in r.getMessage() for r in caplog.records)


async def test_a_bus_over_nats_keeps_each_aggregates_order(server: NatsServer) -> None:
    transport = nats_transport(server.url)
    bus = Bus(
        transport,
        retry=RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.002),
        store=DeliveryStore("sqlite+aiosqlite:///:memory:"),
    )
    handled: list[tuple[str, int]] = []
    jitter = random.Random(7)

    async def record(event: Pinged, env: Envelope) -> None:
        await anyio.sleep(jitter.random() / 1000)  # handlers finish out of publish order
        handled.append((env.aggregate_id, env.sequence))

    bus.subscribe("orders", Pinged, record)
    aggregates = [f"agg-{a}" for a in range(20)]
    await bus.start()
    try:
        for sequence in range(1, 11):
            for aggregate in aggregates:
                await bus.transport.publish(envelope(sequence, aggregate, sequence))
        await settle(bus, transport)
    finally:
        await bus.stop()

    assert len(handled) == 200
    for aggregate in aggregates:
        assert [s for a, s in handled if a == aggregate] == list(range(1, 11))


async def test_readiness_follows_the_broker_and_delivery_resumes_after_it_returns(
    tmp_path: Path,
) -> None:
    with nats_server(tmp_path / "nats") as own:
        transport = nats_transport(own.url)
        recorder = Recorder()
        transport.bind("payments", "Pinged", recorder.sink)
        async with started(transport):
            await transport.ping()
            assert transport.running

            own.kill()
            await until(lambda: not transport.running, "the transport to notice")
            with pytest.raises(ConnectionError, match=own.url):
                await transport.ping()

            own.start()  # same port, same data dir: the stream and durable survive
            await until(lambda: transport.running, "the reconnect")
            await transport.ping()
            sent = envelope(1)
            await transport.publish(sent)
            await until(lambda: recorder.ids == [sent.id], "delivery after the restart", 5)


async def test_delivery_resumes_when_the_broker_comes_back_without_its_state(
    tmp_path: Path,
) -> None:
    with nats_server(tmp_path / "nats") as own:
        # The first request after such a reconnect may go unanswered: give up on it soon.
        transport = nats_transport(own.url, publish_timeout_seconds=1.0)
        recorder = Recorder()
        transport.bind("payments", "Pinged", recorder.sink)
        async with started(transport):
            own.kill()
            shutil.rmtree(own.data_dir / "store")  # its stream and durables are gone
            own.start()
            await until(lambda: transport.running, "the reconnect")

            sent = envelope(1)
            await publish_until_stored(transport, sent)  # declares the stream again
            await until(lambda: recorder.ids == [sent.id], "delivery to a declared-again durable")


async def publish_until_stored(transport: NatsTransport, sent: Envelope) -> None:
    """As the outbox relay does: retry (bounded) until the broker has stored it."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        try:
            await transport.publish(sent)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await anyio.sleep(0.05)


async def test_a_stream_that_keeps_messages_longer_than_the_inbox_ids_is_named(
    server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    names = private_names()
    first = nats_transport(server.url, **names, max_age_seconds=3600)
    async with started(first), broker(server.url) as client:
        info = await client.jetstream().stream_info(first.stream)
    assert info.config.max_age == 3600  # the stream made keeps what the retention says

    later = nats_transport(server.url, **names, max_age_seconds=60)  # a shorter retention now
    with caplog.at_level(logging.WARNING, logger="app.split.nats_transport"):
        async with started(later):
            pass

    warned = [r.getMessage() for r in caplog.records if "APP_RETENTION_SECONDS" in r.getMessage()]
    assert len(warned) == 1 and "3600 s" in warned[0] and "--max-age 60s" in warned[0]
