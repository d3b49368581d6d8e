"""Stores without SQL models (the orders documents, the bus's own store) keep a schema
version and upgrade step by step (docs/decisions/0028-migrations.md)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from app.bus.delivery_store import DeliveryStore
from app.kernel.migrations import (
    UNVERSIONED,
    SchemaRefused,
    SqlVersionRecord,
    UpgradeSteps,
    check_schemas,
)
from app.modules.orders.store_sqlite import SqliteOrderDocuments

pytestmark = pytest.mark.anyio

# The orders store's schema as release 8e8cbb7 made it (version 1).
RELEASE_ORDERS_SCHEMA = """
CREATE TABLE orders (
    id TEXT PRIMARY KEY, user_id TEXT NOT NULL, status TEXT NOT NULL,
    has_outbox INTEGER NOT NULL, idempotency_key TEXT, doc TEXT NOT NULL
);
CREATE INDEX orders_by_user ON orders (user_id, id);
CREATE INDEX orders_by_status ON orders (status, id);
CREATE INDEX orders_with_outbox ON orders (id) WHERE has_outbox = 1;
CREATE UNIQUE INDEX orders_by_idempotency_key ON orders (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE TABLE users (user_id TEXT PRIMARY KEY, sequence INTEGER NOT NULL);
"""


def record_of(db: sqlite3.Connection) -> SqlVersionRecord:
    def tables() -> set[str]:
        return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}

    return SqlVersionRecord(
        lambda sql, parameters: db.execute(sql, parameters).fetchall(), "demo", ["data"], tables
    )


def steps_logging(ran: list[str], count: int) -> UpgradeSteps[sqlite3.Connection]:
    def create(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE data (x INTEGER)")
        ran.append("create")

    def step(number: int) -> Callable[[sqlite3.Connection], None]:
        def run(_db: sqlite3.Connection) -> None:
            ran.append(f"{number}->{number + 1}")

        return run

    return UpgradeSteps("demo", create, [step(n) for n in range(1, count + 1)])


@given(head_steps=st.integers(0, 6), data=st.data())
def test_a_store_runs_exactly_the_steps_after_its_version_in_order(
    head_steps: int, data: st.DataObject
) -> None:
    ran: list[str] = []
    steps = steps_logging(ran, head_steps)
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE data (x INTEGER)")
    version = data.draw(st.integers(1, steps.head))
    record_of(db).write(version)
    state = steps.upgrade(db, record_of(db))
    assert ran == [f"{n}->{n + 1}" for n in range(version, steps.head)]
    assert state.at_head and record_of(db).read() == steps.head


def test_an_empty_store_is_created_at_the_head_without_running_a_step() -> None:
    ran: list[str] = []
    steps = steps_logging(ran, 3)
    db = sqlite3.connect(":memory:")
    assert steps.state(record_of(db)).empty
    assert steps.upgrade(db, record_of(db)).current == "4"
    assert ran == ["create"]


def test_a_store_from_before_versions_is_version_1_and_runs_every_step() -> None:
    ran: list[str] = []
    steps = steps_logging(ran, 2)
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE data (x INTEGER)")
    assert steps.state(record_of(db)).current == UNVERSIONED
    steps.upgrade(db, record_of(db))
    assert ran == ["1->2", "2->3"]


def test_a_store_ahead_of_the_code_is_refused_and_left_as_it_is() -> None:
    ran: list[str] = []
    steps = steps_logging(ran, 1)
    db = sqlite3.connect(":memory:")
    record_of(db).write(7)
    with pytest.raises(SchemaRefused, match="revision 7, which this code does not know"):
        steps.upgrade(db, record_of(db))
    assert ran == [] and record_of(db).read() == 7


async def test_the_orders_store_of_the_release_before_versions_is_adopted_with_its_orders(
    tmp_path: Path,
) -> None:
    path = tmp_path / "orders.db"
    db = sqlite3.connect(path)
    db.executescript(RELEASE_ORDERS_SCHEMA)
    db.execute(
        "INSERT INTO orders VALUES ('o-1', 'u-1', 'PAID', 0, NULL, "
        """'{"_id": "o-1", "user_id": "u-1", "status": "PAID", "rev": 3}')"""
    )
    db.commit()
    db.close()
    store = SqliteOrderDocuments(str(path), f"sqlite:///{path}")
    assert (await store.schema_state()).current == UNVERSIONED
    with pytest.raises(SchemaRefused, match="orders store is at revision unversioned"):
        await check_schemas([store], "production")
    await store.open()
    try:
        assert (await store.schema_state()).at_head
        order = await store.get_order("o-1")
        assert order is not None and order["status"] == "PAID"
    finally:
        await store.close()


async def test_an_orders_store_newer_than_the_code_is_not_opened(tmp_path: Path) -> None:
    path = tmp_path / "orders.db"
    store = SqliteOrderDocuments(str(path), f"sqlite:///{path}")
    await store.open()
    await store.close()
    db = sqlite3.connect(path)
    db.execute("UPDATE schema_version SET version = 9 WHERE store = 'orders'")
    db.commit()
    db.close()
    with pytest.raises(SchemaRefused, match="orders store is at revision 9"):
        await store.open()
    with pytest.raises(SchemaRefused):
        await check_schemas([store], "development")


async def test_the_bus_store_keeps_its_version_and_refuses_a_newer_one(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bus.db'}"
    store = DeliveryStore(url)
    await store.open()
    assert (await store.schema_state()).current == "1"
    async with store.transaction() as connection:
        await connection.execute(sa.text("UPDATE schema_version SET version = 5"))
    await store.close()
    newer = DeliveryStore(url)
    try:
        with pytest.raises(SchemaRefused, match="bus store is at revision 5"):
            await newer.open()
    finally:
        await newer.close()
