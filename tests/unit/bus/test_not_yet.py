"""A handler's "not yet" (app/bus/retry.py NotYet): the event whose prerequisite arrives
3 s after it waits without spending its attempts, is handled once as soon as the
prerequisite is, and never becomes a dead letter; in process and over NATS alike. Past the
wait's deadline, "not yet" is an ordinary failure again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest

from app.bus import Bus, DeliveryStore, Envelope, Event, RetryPolicy
from app.bus.envelope import wrap
from app.bus.retry import NotYet
from app.bus.transport import InProcessTransport, Transport
from tests.support.nats import NatsServer, nats_server, nats_transport
from tests.support.waits import until

pytestmark = pytest.mark.anyio

PREREQUISITE_LATE_SECONDS = 3.0


class Introduced(Event, frozen=True, kw_only=True):
    wire_name = "TestIntroduced"
    version = 1

    person: str


class Greeted(Event, frozen=True, kw_only=True):
    wire_name = "TestGreeted"
    version = 1

    person: str


def envelope_of(event: Event, aggregate: str) -> Envelope:
    return wrap(
        event,
        producer="test",
        aggregate_id=aggregate,
        sequence=1,
        correlation_id="c-1",
        causation_id=None,
        traceparent=None,
    )


class Greeter:
    """Greets only people it was introduced to; otherwise, not yet."""

    def __init__(self) -> None:
        self.known: set[str] = set()
        self.greeted: list[tuple[str, float]] = []
        self.refusals = 0

    async def introduced(self, event: Introduced, _envelope: Envelope) -> None:
        self.known.add(event.person)

    async def greet(self, event: Greeted, _envelope: Envelope) -> None:
        if event.person not in self.known:
            self.refusals += 1
            raise NotYet(f"{event.person} was not introduced yet")
        self.greeted.append((event.person, time.monotonic()))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    with nats_server(tmp_path_factory.mktemp("nats")) as running:
        yield running


@asynccontextmanager
async def greeting_bus(
    transport: Transport, retry: RetryPolicy
) -> AsyncIterator[tuple[Bus, Greeter]]:
    bus = Bus(transport, retry=retry, store=DeliveryStore("sqlite+aiosqlite:///:memory:"))
    greeter = Greeter()
    bus.subscribe("greeter", Introduced, greeter.introduced)
    bus.subscribe("greeter", Greeted, greeter.greet)
    await bus.start()
    try:
        yield bus, greeter
    finally:
        await bus.stop()


def publish_soon(bus: Bus, envelope: Envelope) -> asyncio.Task[None]:
    """In process, publish returns once the event is handled: publish in the background."""
    return asyncio.get_running_loop().create_task(bus.transport.publish(envelope))


# Two attempts, milliseconds apart: were the waits spent as attempts, the greeting would be a
# dead letter within a few ms of its first refusal.
IMPATIENT = RetryPolicy(max_attempts=2, base_delay=0.001, max_delay=0.002, not_yet_seconds=30.0)


async def the_greeting_waits_for_its_introduction(transport: Transport) -> None:
    async with greeting_bus(transport, IMPATIENT) as (bus, greeter):
        publish_soon(bus, envelope_of(Greeted(person="ada"), "greeting-1"))
        await until(lambda: greeter.refusals > 0, timeout=10, what="the greeting refused once")
        await asyncio.sleep(PREREQUISITE_LATE_SECONDS)
        introduced_at = time.monotonic()
        publish_soon(bus, envelope_of(Introduced(person="ada"), "person-ada"))
        await until(lambda: greeter.greeted, timeout=10, what="the greeting handled")
        await bus.wait_quiet()

        assert [person for person, _ in greeter.greeted] == ["ada"]
        # Woken by the introduction's handling, not by a backoff that grew meanwhile.
        assert greeter.greeted[0][1] - introduced_at < 0.5
        assert await bus.store.count_dead_letters() == 0
        assert bus.stats[("TestGreeted", "greeter", "failed")] == 0
        assert bus.stats[("TestGreeted", "greeter", "handled")] == 1
        assert (await bus.store.remembered()).attempts == {}


async def test_in_process_a_not_yet_waits_without_spending_attempts() -> None:
    await the_greeting_waits_for_its_introduction(InProcessTransport())


@pytest.mark.services
async def test_over_nats_a_not_yet_waits_without_spending_attempts(server: NatsServer) -> None:
    await the_greeting_waits_for_its_introduction(nats_transport(server.url))


async def test_past_its_deadline_a_not_yet_is_an_ordinary_failure_and_dead_letters() -> None:
    brief = RetryPolicy(max_attempts=2, base_delay=0.001, max_delay=0.002, not_yet_seconds=0.2)
    async with greeting_bus(InProcessTransport(), brief) as (bus, greeter):
        started = time.monotonic()
        publish_soon(bus, envelope_of(Greeted(person="bob"), "greeting-2"))
        await until(
            lambda: bus.stats[("TestGreeted", "greeter", "dead_lettered")] == 1,
            timeout=10,
            what="the greeting dead-lettered",
        )
        assert time.monotonic() - started >= 0.2
        assert bus.stats[("TestGreeted", "greeter", "failed")] == 2
        assert await bus.store.count_dead_letters() == 1
        assert greeter.greeted == []
