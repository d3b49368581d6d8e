"""The bus store's retention (docs/decisions/0035-retention.md): dead letters, the events
parked in a lane left without one, and attempts go after the dead-letter retention, each
letter logged; a lane freed by a purge is delivered as after a discard; what is younger,
what waits behind a younger letter and another process's consumers' records stay. On SQLite,
and on PostgreSQL (services)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.bus import Bus, DeliveryStore, Envelope, RetryPolicy
from app.bus.delivery_store import attempts, dead_letters, parked
from app.bus.transport import InProcessTransport
from app.kernel.ids import utcnow
from tests.support.events import Pinged, envelope
from tests.support.stores import postgres_databases

pytestmark = pytest.mark.anyio

WEEK = timedelta(days=7)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[DeliveryStore]:
    if request.param == "sqlite":
        opened = DeliveryStore("sqlite+aiosqlite:///:memory:")
        await opened.open()
        yield opened
        await opened.close()
        return
    async with postgres_databases(("bus",)) as urls:
        opened = DeliveryStore(urls["bus"])
        await opened.open()
        yield opened
        await opened.close()


async def age(
    store: DeliveryStore, table: sa.Table, column: str, event_id: str, at: datetime
) -> None:
    """Move a record back in time (what a week of waiting would do)."""
    async with store.transaction() as connection:
        await connection.execute(
            table.update().where(table.c.event_id == event_id).values({column: at})
        )


async def test_old_letters_parked_events_and_attempts_go_and_the_rest_stays(
    store: DeliveryStore,
) -> None:
    now = utcnow()
    old = now - 2 * WEEK
    e = {n: envelope(n, aggregate, sequence) for n, aggregate, sequence in (
        (1, "a", 1), (2, "a", 2), (3, "a", 3), (4, "b", 1), (5, "b", 2), (6, "a", 1),
        (7, "d", 1), (8, "e", 1),
    )}  # fmt: skip
    old_letter = await store.add_dead_letter("c", e[1], "broken", 3)
    await store.park("c", e[2])  # behind the old letter, young itself
    await store.park("c", e[3])  # behind the old letter, old
    young_letter = await store.add_dead_letter("c", e[4], "broken", 3)
    await store.park("c", e[5])  # old, but behind a young letter
    await store.add_dead_letter("elsewhere", e[6], "broken", 3)  # another process's consumer
    await store.record_failure("c", e[7], 1, "flaky")
    await store.record_failure("c", e[8], 1, "flaky")
    for n in (1, 6):
        await age(store, dead_letters, "failed_at", e[n].id, old)
    for n in (3, 5):
        await age(store, parked, "parked_at", e[n].id, old)
    await age(store, attempts, "updated_at", e[7].id, old)

    purged = await store.purge(now - WEEK, ["c"])

    assert [letter.id for letter in purged.dead_letters] == [old_letter.id]
    assert purged.counts == {"dead_letters": 1, "parked": 1, "attempts": 1}
    remaining = {x.id for x in await store.dead_letters(after=None, limit=10)}
    assert old_letter.id not in remaining and young_letter.id in remaining
    assert len(remaining) == 2  # the other process's consumer keeps its old letter
    assert [x.id for x in await store.parked_for("c", "a")] == [e[2].id]
    assert [x.id for x in await store.parked_for("c", "b")] == [e[5].id]
    assert set((await store.remembered()).attempts) == {("c", e[8].id)}


async def test_an_event_parked_for_a_newer_version_waits_for_the_upgrade_however_old(
    store: DeliveryStore,
) -> None:
    # No letter stands in front of it (nothing failed): a consumer left un-upgraded past the
    # retention must still get it once it reads the version (docs/decisions/0027).
    waiting = envelope(1, "v", 1)
    await store.park("c", waiting)
    await age(store, parked, "parked_at", waiting.id, utcnow() - 10 * WEEK)

    purged = await store.purge(utcnow() - WEEK, ["c"])

    assert purged.counts["parked"] == 0
    assert [x.id for x in await store.parked_for("c", "v")] == [waiting.id]


async def test_nothing_within_the_retention_goes(store: DeliveryStore) -> None:
    await store.add_dead_letter("c", envelope(1), "broken", 3)
    await store.park("c", envelope(2, "z", 2))
    await store.record_failure("c", envelope(3), 1, "flaky")

    purged = await store.purge(utcnow() - WEEK, ["c"])

    assert purged.counts == {"dead_letters": 0, "parked": 0, "attempts": 0}
    assert await store.count_dead_letters() == 1


class Flaky:
    def __init__(self) -> None:
        self.broken = True
        self.handled: list[int] = []

    async def __call__(self, event: Pinged, _: Envelope) -> None:
        if self.broken:
            raise RuntimeError("handler is broken")
        self.handled.append(event.n)


async def test_a_purged_letter_is_logged_and_its_lane_delivered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = Bus(
        InProcessTransport(),
        retry=RetryPolicy(max_attempts=1, base_delay=0.001, max_delay=0.002),
        store=DeliveryStore("sqlite+aiosqlite:///:memory:"),
    )
    handler = Flaky()
    bus.subscribe("c", Pinged, handler)
    await bus.start()
    try:
        await bus.transport.publish(envelope(1, "a", 1))  # dead-lettered
        await bus.transport.publish(envelope(2, "a", 2))  # parked behind it
        handler.broken = False
        [letter] = await bus.store.dead_letters(after=None, limit=10)
        await age(bus.store, dead_letters, "failed_at", letter.envelope.id, utcnow() - 2 * WEEK)

        with caplog.at_level(logging.WARNING, logger="app.bus"):
            purged = await bus.purge_failures(utcnow() - WEEK)
        await bus.wait_quiet(2)

        assert [x.id for x in purged.dead_letters] == [letter.id]
        [record] = [r for r in caplog.records if "purged dead letter" in r.getMessage()]
        assert record.levelno == logging.WARNING
        for part in (letter.id, "Pinged", "for c"):
            assert part in record.getMessage()
        # The parked event is young: the purge freed its lane and it went, as after a discard.
        assert handler.handled == [2]
        assert await bus.store.parked_for("c", "a") == []
        await bus.transport.publish(envelope(3, "a", 3))  # the lane is open again
        await bus.wait_quiet(2)
        assert handler.handled == [2, 3]
    finally:
        await bus.stop()


# The invariant: whatever the ages, a purge removes no letter, parked event or attempt
# younger than the cutoff, no parked event from a lane that still has a letter, and no
# parked event from a lane whose letter it did not purge (one parked for a newer version).
ages = st.lists(st.tuples(st.sampled_from("abc"), st.integers(-3, 3), st.booleans()), max_size=8)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(letters=ages, waiting=ages)
async def test_purge_never_removes_a_young_record_or_a_guarded_parked_event(
    letters: list[tuple[str, int, bool]], waiting: list[tuple[str, int, bool]]
) -> None:
    store = DeliveryStore("sqlite+aiosqlite:///:memory:")
    await store.open()
    now = utcnow()
    try:
        aged_letters = [(envelope(n, a, n), days) for n, (a, days, _) in enumerate(letters)]
        aged_parked = [(envelope(n, a, n), days) for n, (a, days, _) in enumerate(waiting, 100)]
        for event, days in aged_letters:
            await store.add_dead_letter("c", event, "broken", 1)
            await age(store, dead_letters, "failed_at", event.id, now + timedelta(days=days))
        for event, days in aged_parked:
            await store.park("c", event)
            await age(store, parked, "parked_at", event.id, now + timedelta(days=days))

        await store.purge(now, ["c"])

        kept = await store.dead_letters(after=None, limit=100)
        kept_ids = {x.envelope.id for x in kept}
        guarded = {x.envelope.aggregate_id for x in kept}
        purged_lanes = {event.aggregate_id for event, days in aged_letters if days < 0}
        for event, days in aged_letters:
            assert (event.id in kept_ids) == (days >= 0)
        for event, days in aged_parked:
            waiting_now = await store.parked_for("c", event.aggregate_id)
            still = event.id in {x.id for x in waiting_now}
            kept_anyway = event.aggregate_id in guarded or event.aggregate_id not in purged_lanes
            assert still == (days >= 0 or kept_anyway)
    finally:
        await store.close()
