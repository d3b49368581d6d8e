"""The SQL unit of work (app/bus/sql_store.py): the claim of the cause, the effect, the
outbox rows and the idempotent response commit together or not at all, and the events reach
the relay only after the commit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import msgspec
import pytest
import sqlalchemy as sa

from app.bus import Event
from app.bus.envelope import Envelope, wrap
from app.bus.sql_outbox import inbox_table, outbox_table
from app.bus.sql_store import SqlModuleStore, SqlUnitOfWork, idempotency_table
from app.kernel.idempotency import Idempotency, KeyTaken
from app.kernel.ids import utcnow
from tests.support.work import HandedOff

pytestmark = pytest.mark.anyio

metadata = sa.MetaData()
things = sa.Table("things", metadata, sa.Column("id", sa.String(36), primary_key=True))
outbox = outbox_table(metadata)
inbox = inbox_table(metadata)
keys = idempotency_table(metadata)


class ThingMade(Event, frozen=True, kw_only=True):
    wire_name = "ThingMade"
    version = 1

    thing_id: str


class Thing(msgspec.Struct, frozen=True):
    id: str
    event_sequence: int = 1


class Things(SqlModuleStore):
    def __init__(self) -> None:
        super().__init__(
            "sqlite:///:memory:", metadata, outbox=outbox, inbox=inbox, idempotency=keys
        )

    async def ids(self) -> list[str]:
        async with self.reading() as connection:
            return list((await connection.execute(sa.select(things.c.id))).scalars())


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def store() -> AsyncIterator[Things]:
    things_store = Things()
    await things_store.open()
    yield things_store
    await things_store.close()


@pytest.fixture
def bus() -> HandedOff:
    return HandedOff("things", publishes=(ThingMade,))


def cause(event_id: str = "e-1") -> Envelope:
    envelope = wrap(
        ThingMade(thing_id="elsewhere"),
        producer="elsewhere",
        aggregate_id="a",
        sequence=1,
        correlation_id="c",
        causation_id=None,
    )
    return msgspec.structs.replace(envelope, id=event_id)


async def make(
    store: Things, bus: HandedOff, thing_id: str, *, event: Envelope | None = None
) -> SqlUnitOfWork:
    async with store.unit_of_work(bus, cause=event) as work:
        if work.handled_before:
            return work
        await work.connection.execute(things.insert().values(id=thing_id))
        work.publish(Thing(thing_id), [ThingMade(thing_id=thing_id)])
    return work


async def test_the_effect_its_events_and_the_claim_commit_together(
    store: Things, bus: HandedOff
) -> None:
    work = await make(store, bus, "t-1", event=cause())

    assert work.committed
    assert await store.ids() == ["t-1"]
    assert [e.aggregate_id for e in bus.handed] == ["t-1"]
    assert bus.handed[0].sequence == 1
    assert await store.outbox.pending(10) == bus.handed  # type: ignore[union-attr]
    assert await store.was_handled(cause())


async def test_a_redelivered_cause_writes_nothing_and_hands_nothing_off(
    store: Things, bus: HandedOff
) -> None:
    await make(store, bus, "t-1", event=cause())

    again = await make(store, bus, "t-2", event=cause())

    assert again.handled_before and not again.committed
    assert await store.ids() == ["t-1"]
    assert len(bus.handed) == 1


async def test_a_failure_undoes_the_effect_the_events_and_the_claim(
    store: Things, bus: HandedOff
) -> None:
    with pytest.raises(RuntimeError):
        async with store.unit_of_work(bus, cause=cause()) as work:
            await work.connection.execute(things.insert().values(id="t-1"))
            work.publish(Thing("t-1"), [ThingMade(thing_id="t-1")])
            raise RuntimeError("the effect failed half way")

    assert not work.committed
    assert await store.ids() == []
    assert bus.handed == []
    assert await store.outbox.pending(10) == []  # type: ignore[union-attr]
    assert not await store.was_handled(cause())  # the redelivery will run it again


async def test_a_cancelled_unit_of_work_writes_nothing(store: Things, bus: HandedOff) -> None:
    async with store.unit_of_work(bus, cause=cause()) as work:
        await work.connection.execute(things.insert().values(id="t-1"))
        work.publish(Thing("t-1"), [ThingMade(thing_id="t-1")])
        work.cancel()

    assert not work.committed
    assert await store.ids() == []
    assert bus.handed == []
    assert not await store.was_handled(cause())


async def test_the_idempotent_response_is_stored_with_the_effect_once(
    store: Things, bus: HandedOff
) -> None:
    idempotency = Idempotency(60, b"k" * 32)
    write = idempotency.write("things", "key-1", "digest", 201, lambda thing: thing.id.encode())
    async with store.unit_of_work(bus) as work:
        await work.remember(write, Thing("t-1"))
        await work.connection.execute(things.insert().values(id="t-1"))

    stored = await store.remembered("things", "key-1")
    assert stored is not None and stored.body == b"t-1" and stored.status == 201

    with pytest.raises(KeyTaken):  # the same key again: this write loses, whole
        async with store.unit_of_work(bus) as work:
            await work.connection.execute(things.insert().values(id="t-2"))
            await work.remember(write, Thing("t-2"))
    assert await store.ids() == ["t-1"]


async def test_purge_drops_delivered_rows_handled_ids_and_expired_keys(
    store: Things, bus: HandedOff
) -> None:
    await make(store, bus, "t-1", event=cause())
    await store.outbox.mark_delivered(bus.handed)  # type: ignore[union-attr]
    idempotency = Idempotency(-1, b"k" * 32)  # expired as soon as written
    async with store.unit_of_work(bus) as work:
        await work.remember(idempotency.write("s", "k", "d", 201, lambda _: b""), None)

    removed = await store.purge(utcnow() + timedelta(seconds=1))

    assert removed == {"outbox": 1, "inbox": 1, "idempotency_keys": 1}
    assert not await store.was_handled(cause())
