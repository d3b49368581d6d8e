"""The revision that gives every module's outbox its `aggregate_id` fills it from the
envelopes already stored, in batches, and leaves the store exactly as a new one: the models'
schema, the rows and their positions (docs/decisions/0039-outbox-aggregate-column.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from app.bus import sql_tables_v2
from app.bus.envelope import Envelope, encode
from app.bus.sql_store import SqlModuleStore
from app.kernel.ids import isoformat, new_id, utcnow
from app.modules.payments.store import PaymentsStore
from app.modules.users.store import UsersStore
from tests.support.release_tables import migrations_of
from tests.support.stores import postgres_databases

pytestmark = pytest.mark.anyio

# Each module with an outbox, and its revision before the column.
BEFORE: dict[str, tuple[Callable[[str], SqlModuleStore], str]] = {
    "users": (UsersStore, "0002"),
    "payments": (PaymentsStore, "0001"),
}
old_outbox = sa.table(
    "outbox",
    sa.column("position"),
    sa.column("id"),
    sa.column("type"),
    sa.column("envelope"),
    sa.column("created_at"),
    sa.column("delivered_at"),
)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    async with postgres_databases(("outbox",)) as urls:
        yield urls["outbox"]


async def a_store_before_the_column(module: str, url: str) -> SqlModuleStore:
    store_class, revision = BEFORE[module]
    store = store_class(url)
    async with store.transaction() as connection:
        await connection.run_sync(
            lambda c: command.upgrade(migrations_of(store).config(c), revision)
        )
    return store


def an_envelope(aggregate_id: str, sequence: int) -> Envelope:
    return Envelope(
        id=new_id(),
        type="SomethingHappened",
        version=1,
        occurred_at=isoformat(utcnow()),
        producer="test",
        aggregate_id=aggregate_id,
        sequence=sequence,
        correlation_id="c",
        payload={},
    )


async def old_rows(store: SqlModuleStore, blobs: list[bytes]) -> None:
    """Rows as the revision before wrote them: no aggregate_id; every other one delivered."""
    now = utcnow()
    async with store.transaction() as connection:
        for n, blob in enumerate(blobs):
            await connection.execute(
                old_outbox.insert().values(
                    id=new_id(),
                    type="SomethingHappened",
                    envelope=blob,
                    created_at=now,
                    delivered_at=now if n % 2 else None,
                )
            )


async def outbox_rows(store: SqlModuleStore) -> list[tuple[int, bytes, str]]:
    query = sa.text("SELECT position, envelope, aggregate_id FROM outbox ORDER BY position")
    async with store.reading() as connection:
        return [(row[0], bytes(row[1]), row[2]) for row in await connection.execute(query)]


@pytest.mark.parametrize("module", BEFORE)
async def test_the_revision_fills_each_rows_aggregate_id_from_its_envelope_in_batches(
    module: str, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sql_tables_v2, "BATCH", 3)  # seven rows: three batches
    envelopes = [an_envelope(f"aggregate-{n % 3}", n) for n in range(7)]
    store = await a_store_before_the_column(module, database_url)
    try:
        await old_rows(store, [encode(e) for e in envelopes])
        async with store.reading() as connection:
            positions = sa.select(old_outbox.c.position).order_by(old_outbox.c.position)
            before = (await connection.execute(positions)).scalars().all()

        await store.open()  # behind: migrated to the head

        assert (await store.schema_state()).at_head
        rows = await outbox_rows(store)
        assert [position for position, _, _ in rows] == list(before)  # the relay's order kept
        assert [(blob, aggregate) for _, blob, aggregate in rows] == [
            (encode(e), e.aggregate_id) for e in envelopes
        ]
        async with store.reading() as connection:
            differences = await connection.run_sync(migrations_of(store).differences)
        assert differences == []  # NOT NULL and indexed, as a new store's
    finally:
        await store.close()


async def test_an_outbox_row_that_holds_no_envelope_stops_the_upgrade_and_changes_nothing(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'users.db'}"
    store = await a_store_before_the_column("users", url)
    try:
        await old_rows(store, [encode(an_envelope("a", 1)), b'{"id": "x"}'])

        with pytest.raises(RuntimeError, match="outbox row 2 holds no envelope"):
            await store.open()

        assert (await store.schema_state()).current == "0002"
        async with store.reading() as connection:
            columns = await connection.run_sync(
                lambda c: {column["name"] for column in sa.inspect(c).get_columns("outbox")}
            )
        assert "aggregate_id" not in columns
    finally:
        await store.close()
