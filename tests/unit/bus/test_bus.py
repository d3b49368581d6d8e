"""The bus on its own: fan-out through pyee, per-aggregate order, retries, dead letters,
the outbox relay, and the boundaries of a module's handle."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import msgspec
import pytest

from app.bus import Bus, DeliveryStore, Envelope, Event, RetryPolicy
from app.bus.envelope import decode, encode
from app.bus.transport import InProcessTransport
from app.kernel.errors import BoundaryViolation
from tests.support.events import Pinged, envelope

pytestmark = pytest.mark.anyio


class Ponged(Event, frozen=True, kw_only=True):
    wire_name = "Ponged"
    version = 1

    n: int


def new_bus(max_attempts: int = 3, store_url: str = "sqlite+aiosqlite:///:memory:") -> Bus:
    return Bus(
        InProcessTransport(),
        retry=RetryPolicy(max_attempts=max_attempts, base_delay=0.001, max_delay=0.002),
        store=DeliveryStore(store_url),
    )


async def test_envelope_survives_json_round_trip() -> None:
    original = envelope(7)
    assert decode(encode(original)) == original


async def test_every_subscribed_consumer_gets_each_event_once() -> None:
    bus = new_bus()
    seen: dict[str, list[int]] = {"a": [], "b": []}

    async def into(name: str, event: Pinged, _: Envelope) -> None:
        seen[name].append(event.n)

    bus.subscribe("a", Pinged, lambda e, env: into("a", e, env))
    bus.subscribe("b", Pinged, lambda e, env: into("b", e, env))
    await bus.start()
    await bus.transport.publish(envelope(1))
    await bus.wait_quiet(2)
    assert seen == {"a": [1], "b": [1]}
    await bus.stop()


async def test_events_of_one_aggregate_are_handled_in_order_while_others_interleave() -> None:
    bus = new_bus()
    handled: list[tuple[str, int]] = []

    async def slow_then_fast(event: Pinged, env: Envelope) -> None:
        await asyncio.sleep(0.01 if event.n == 0 else 0)
        handled.append((env.aggregate_id, event.n))

    bus.subscribe("c", Pinged, slow_then_fast)
    await bus.start()
    receipts = [
        asyncio.create_task(bus.transport.publish(envelope(n, aggregate, n)))
        for n in range(20)
        for aggregate in ("x", "y")
    ]
    await asyncio.gather(*receipts)
    for aggregate in ("x", "y"):
        assert [n for a, n in handled if a == aggregate] == list(range(20))
    await bus.stop()


async def test_a_failing_handler_is_retried_then_succeeds() -> None:
    bus = new_bus(max_attempts=3)
    calls = 0

    async def flaky(event: Pinged, env: Envelope) -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise RuntimeError("not yet")

    bus.subscribe("c", Pinged, flaky)
    await bus.start()
    await bus.transport.publish(envelope(1))
    assert calls == 3
    assert bus.stats[("Pinged", "c", "failed")] == 2
    assert bus.stats[("Pinged", "c", "retried")] == 2
    assert bus.stats[("Pinged", "c", "handled")] == 1
    assert await bus.store.dead_letters(after=None, limit=10) == []
    await bus.stop()


async def test_a_handler_that_keeps_failing_becomes_a_dead_letter(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = new_bus(max_attempts=2)

    async def broken(event: Pinged, env: Envelope) -> None:
        raise ValueError("boom")

    bus.subscribe("c", Pinged, broken)
    await bus.start()
    sent = envelope(1)
    await bus.transport.publish(sent)
    [letter] = await bus.store.dead_letters(after=None, limit=10)
    assert (letter.consumer, letter.envelope, letter.attempts) == ("c", sent, 2)
    assert "boom" in letter.error
    assert any("boom" in record.getMessage() for record in caplog.records)
    await bus.stop()


async def test_a_malformed_payload_is_dead_lettered_without_calling_the_handler() -> None:
    bus = new_bus()
    called = False

    async def handler(event: Pinged, env: Envelope) -> None:
        nonlocal called
        called = True

    bus.subscribe("c", Pinged, handler)
    await bus.start()
    bad = msgspec.structs.replace(envelope(1), payload={"n": "one"})
    await bus.transport.publish(bad)
    assert not called
    [letter] = await bus.store.dead_letters(after=None, limit=10)
    assert "payload is invalid" in letter.error
    await bus.stop()


async def test_a_module_cannot_publish_or_subscribe_to_what_it_did_not_declare() -> None:
    bus = new_bus()
    handle = bus.scoped("m", publishes=[Pinged], subscribes=[Pinged])

    with pytest.raises(BoundaryViolation, match="Ponged, which it did not declare"):
        handle.envelope(Ponged(n=1), aggregate_id="a", sequence=1)

    async def handler(event: Ponged, env: Envelope) -> None:
        raise AssertionError

    with pytest.raises(BoundaryViolation, match="subscribes to Ponged"):
        handle.subscribe(Ponged, handler)


class MemoryOutbox:
    """An outbox kept in a dict: what a store would keep across a restart."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[Envelope, bool]] = {}

    def add(self, envelopes: Sequence[Envelope]) -> None:
        for e in envelopes:
            self.rows[e.id] = (e, False)

    async def pending(self, limit: int) -> list[Envelope]:
        return [e for e, delivered in self.rows.values() if not delivered][:limit]

    async def mark_delivered(self, envelopes: Sequence[Envelope]) -> None:
        for e in envelopes:
            self.rows[e.id] = (e, True)


async def test_the_relay_marks_delivered_only_after_consumers_finish() -> None:
    bus = new_bus()
    outbox = MemoryOutbox()
    release = asyncio.Event()

    async def waits(event: Pinged, env: Envelope) -> None:
        await release.wait()

    bus.subscribe("c", Pinged, waits)
    handle = bus.scoped("m", publishes=[Pinged], subscribes=[])
    handle.attach_outbox(outbox)
    await bus.start()
    sent = handle.envelope(Pinged(n=1), aggregate_id="a", sequence=1)
    outbox.add([sent])
    handle.committed([sent])
    for _ in range(10):
        await asyncio.sleep(0)
    assert outbox.rows[sent.id] == (sent, False)
    release.set()
    await bus.wait_quiet(2)
    assert outbox.rows[sent.id] == (sent, True)
    await bus.stop()


async def test_what_a_stopped_process_left_in_the_outbox_is_published_on_start() -> None:
    outbox = MemoryOutbox()
    left = [envelope(n, aggregate="a", sequence=n) for n in range(1, 4)]
    outbox.add(left)
    handled: list[int] = []

    async def record(event: Pinged, env: Envelope) -> None:
        handled.append(event.n)

    bus = new_bus()
    bus.subscribe("c", Pinged, record)
    bus.scoped("m", publishes=[Pinged], subscribes=[]).attach_outbox(outbox)
    await bus.start()
    await bus.wait_quiet(2)
    assert handled == [1, 2, 3]
    assert all(delivered for _, delivered in outbox.rows.values())
    await bus.stop()


async def test_wait_quiet_times_out_naming_the_work_under_way() -> None:
    bus = new_bus()
    never = asyncio.Event()

    async def stuck(event: Pinged, env: Envelope) -> None:
        await never.wait()

    bus.subscribe("c", Pinged, stuck)
    await bus.start()
    task = asyncio.create_task(bus.transport.publish(envelope(1)))
    with pytest.raises(TimeoutError, match="under way"):
        await bus.wait_quiet(0.05)
    await bus.stop()
    task.cancel()


class Flaky:
    """A handler that fails while broken, and records what it handled."""

    def __init__(self) -> None:
        self.broken = True
        self.handled: list[tuple[str, int]] = []

    async def __call__(self, event: Pinged, envelope: Envelope) -> None:
        if self.broken:
            raise RuntimeError("handler is broken")
        self.handled.append((envelope.aggregate_id, event.n))


async def test_later_events_of_a_dead_lettered_aggregate_wait_until_it_is_replayed() -> None:
    bus = new_bus(max_attempts=2)
    handler = Flaky()
    bus.subscribe("c", Pinged, handler)
    await bus.start()

    await bus.transport.publish(envelope(1, "a", 1))
    await bus.transport.publish(envelope(2, "a", 2))  # parked behind the dead letter
    handler.broken = False
    await bus.transport.publish(envelope(9, "b", 1))  # another aggregate is not held up
    assert handler.handled == [("b", 9)]
    assert bus.stats[("Pinged", "c", "parked")] == 1

    [letter] = await bus.store.dead_letters(after=None, limit=10)
    assert await bus.replay(letter.id) == letter
    await bus.wait_quiet(2)

    assert handler.handled == [("b", 9), ("a", 1), ("a", 2)]
    assert await bus.store.dead_letters(after=None, limit=10) == []
    assert await bus.store.parked_for("c", "a") == []
    await bus.stop()


async def test_discarding_a_dead_letter_delivers_what_waited_behind_it() -> None:
    bus = new_bus(max_attempts=1)
    handler = Flaky()
    bus.subscribe("c", Pinged, handler)
    await bus.start()
    await bus.transport.publish(envelope(1, "a", 1))
    await bus.transport.publish(envelope(2, "a", 2))
    handler.broken = False

    [letter] = await bus.store.dead_letters(after=None, limit=10)
    await bus.discard(letter.id)
    await bus.wait_quiet(2)

    assert handler.handled == [("a", 2)]
    await bus.stop()


async def test_dead_letters_and_parked_events_survive_a_restart(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'bus.db'}"
    first = new_bus(max_attempts=1, store_url=url)
    broken = Flaky()
    first.subscribe("c", Pinged, broken)
    await first.start()
    await first.transport.publish(envelope(1, "a", 1))
    await first.transport.publish(envelope(2, "a", 2))
    await first.stop()

    second = new_bus(max_attempts=1, store_url=url)
    fixed = Flaky()
    fixed.broken = False
    second.subscribe("c", Pinged, fixed)
    await second.start()
    await second.transport.publish(envelope(3, "a", 3))  # still parked: the letter is back
    assert fixed.handled == []

    [letter] = await second.store.dead_letters(after=None, limit=10)
    await second.replay(letter.id)
    await second.wait_quiet(2)
    assert fixed.handled == [("a", 1), ("a", 2), ("a", 3)]
    await second.stop()


async def test_attempts_are_remembered_across_a_restart(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'bus.db'}"
    first = new_bus(max_attempts=3, store_url=url)
    never = asyncio.Event()
    second_attempt = asyncio.Event()
    calls = 0

    async def fails_then_hangs(event: Pinged, env: Envelope) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("first attempt fails")
        second_attempt.set()
        await never.wait()  # the process "dies" during the second attempt

    first.subscribe("c", Pinged, fails_then_hangs)
    await first.start()
    sent = envelope(1)
    task = asyncio.create_task(first.transport.publish(sent))
    await asyncio.wait_for(second_attempt.wait(), 2)
    await first.stop()
    task.cancel()

    second = new_bus(max_attempts=3, store_url=url)
    second.subscribe("c", Pinged, Flaky())  # still broken
    await second.start()
    await second.transport.publish(sent)
    [letter] = await second.store.dead_letters(after=None, limit=10)
    assert letter.attempts == 3  # the failed first attempt counts: 2 more, not 3 fresh
    await second.stop()


async def test_stopping_gives_up_on_a_store_that_cannot_mark_delivered() -> None:
    class BrokenOutbox(MemoryOutbox):
        async def mark_delivered(self, envelopes: Sequence[Envelope]) -> None:
            raise OSError("disk gone")

    outbox = BrokenOutbox()
    bus = new_bus()
    handle = bus.scoped("m", publishes=[Pinged], subscribes=[])
    handle.attach_outbox(outbox)
    await bus.start()
    sent = handle.envelope(Pinged(n=1), aggregate_id="a", sequence=1)
    outbox.add([sent])
    handle.committed([sent])
    for _ in range(5):
        await asyncio.sleep(0)

    await asyncio.wait_for(bus.stop(), 5)  # bounded: the row stays undelivered for next time

    assert outbox.rows[sent.id] == (sent, False)


async def test_a_letter_whose_consumer_runs_elsewhere_is_refused_and_kept(tmp_path: Path) -> None:
    """Processes of a split share one bus store: a process without the letter's consumer
    must not take the letter out of the store (it could never deliver it)."""
    shared = f"sqlite+aiosqlite:///{tmp_path / 'bus.db'}"
    here, there = new_bus(store_url=shared), new_bus(store_url=shared)

    async def handle(_: Pinged, __: Envelope) -> None:
        return None

    here.subscribe("payments", Pinged, handle)
    there.subscribe("notifications", Pinged, handle)
    await here.start()
    await there.start()
    try:
        await there.store.add_dead_letter("notifications", envelope(1), "broken", 3)
        letter_id = (await there.store.dead_letters(after=None, limit=10))[0].id

        with pytest.raises(LookupError, match="no consumer 'notifications' runs"):
            await here.replay(letter_id)
        with pytest.raises(LookupError):
            await here.discard(letter_id)

        assert await here.store.dead_letter(letter_id) is not None  # still there
        assert await there.replay(letter_id) is not None  # where its consumer runs
        assert await there.store.dead_letter(letter_id) is None
    finally:
        await here.stop()
        await there.stop()
