"""The faults a page switches on, on the bus alone: a paused consumer queues and then drains
in order, a broken handler dead-letters and its replay completes once, and a stalled page
never slows the bus."""

from __future__ import annotations

import asyncio
import time

import pytest

from app.bus import Bus, DeliveryStore, Envelope, Event, RetryPolicy, Watch
from app.bus.envelope import wrap
from app.bus.transport import InProcessTransport

pytestmark = pytest.mark.anyio


class Charged(Event, frozen=True, kw_only=True):
    wire_name = "Charged"
    version = 1

    n: int


def envelope(n: int, aggregate: str = "a") -> Envelope:
    return wrap(
        Charged(n=n),
        producer="payments",
        aggregate_id=aggregate,
        sequence=n,
        correlation_id=f"req-{n}",
        causation_id=None,
    )


def new_bus(watch: Watch | None = None) -> Bus:
    return Bus(
        InProcessTransport(),
        retry=RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.002),
        store=DeliveryStore("sqlite+aiosqlite:///:memory:"),
        watch=watch,
    )


def recording(bus: Bus, consumer: str = "orders") -> list[int]:
    handled: list[int] = []

    async def handle(event: Charged, _: Envelope) -> None:
        handled.append(event.n)

    bus.subscribe(consumer, Charged, handle)
    return handled


async def test_a_paused_consumer_queues_then_drains_in_order_on_resume() -> None:
    bus = new_bus()
    handled = recording(bus)
    await bus.start()
    bus.pause("orders")
    publishing = [
        asyncio.create_task(bus.transport.publish(envelope(n, aggregate=f"a{n % 2}")))
        for n in range(1, 4)
    ]
    await asyncio.sleep(0.05)
    state = bus.consumer_state("orders")
    assert (state.paused, state.backlog, handled) == (True, 3, [])
    with pytest.raises(TimeoutError):
        await bus.wait_quiet(0.05)  # in process, the publishes wait for the paused consumer

    bus.resume("orders")
    await asyncio.gather(*publishing)
    await bus.wait_quiet(2)
    assert sorted(handled) == [1, 2, 3]
    assert [n for n in handled if n % 2] == [1, 3]  # one aggregate's events keep their order
    assert bus.consumer_state("orders").backlog == 0
    await bus.stop()


async def test_the_bus_stops_while_a_consumer_is_paused() -> None:
    bus = new_bus()
    recording(bus)
    await bus.start()
    bus.pause("orders")
    publishing = asyncio.create_task(bus.transport.publish(envelope(1)))
    await asyncio.sleep(0.01)
    await asyncio.wait_for(bus.stop(), 2)
    publishing.cancel()


async def test_a_broken_handler_dead_letters_and_the_replay_after_mending_handles_once() -> None:
    watch = Watch()
    bus = new_bus(watch)
    handled = recording(bus)
    await bus.start()
    bus.break_handler("orders")
    assert bus.consumer_state("orders").broken
    await bus.transport.publish(envelope(7))
    await bus.wait_quiet(2)
    [letter] = await bus.store.dead_letters(after=None, limit=10)
    assert "broken on purpose from the page" in letter.error
    assert (letter.attempts, handled) == (3, [])
    kinds = [o.kind for o in watch.recent() if o.consumer == "orders"]
    assert kinds == ["failed", "failed", "dead_lettered"]

    bus.mend_handler("orders")
    await bus.replay(letter.id)
    await bus.wait_quiet(2)
    await bus.replay(letter.id)  # a second replay finds no letter: still handled once
    await bus.wait_quiet(2)
    assert handled == [7]
    assert [o.kind for o in watch.recent() if o.consumer == "orders"][-1] == "handled"
    await bus.stop()


async def test_an_unknown_consumer_is_a_lookup_error_naming_the_ones_there_are() -> None:
    bus = new_bus()
    recording(bus, "orders")
    recording(bus, "notifications")
    assert bus.consumers() == ["notifications", "orders"]
    for control in (bus.pause, bus.resume, bus.break_handler, bus.mend_handler):
        with pytest.raises(LookupError, match=r"no consumer 'shipping'.*notifications, orders"):
            control("shipping")
    with pytest.raises(LookupError):
        bus.consumer_state("shipping")


async def test_a_subscriber_that_never_reads_does_not_slow_the_bus() -> None:
    watch = Watch(subscriber_buffer=100)
    bus = new_bus(watch)
    handled = recording(bus)
    await bus.start()
    _, stalled = watch.subscribe()  # a page that stopped reading
    started = time.perf_counter()
    await asyncio.gather(
        *(bus.transport.publish(envelope(n, aggregate=f"a{n % 50}")) for n in range(2_000))
    )
    await bus.wait_quiet(5)
    elapsed = time.perf_counter() - started
    assert len(handled) == 2_000
    assert stalled.pending == 100
    assert stalled.dropped == 2_000 - 100
    assert elapsed < 5
    await bus.stop()
