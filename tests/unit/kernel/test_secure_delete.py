"""What a deleted row leaves on disk (docs/decisions/0030-crypto-shredding.md): every SQLite
store, the module stores and the orders documents alike, runs with secure_delete on (whatever
the SQLite build's default), and leaves an empty WAL when it closes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from app.modules.orders.store_sqlite import SqliteOrderDocuments
from app.modules.users.store import UsersStore

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def wal_of(database: Path) -> bytes:
    wal = database.with_name(database.name + "-wal")
    return wal.read_bytes() if wal.exists() else b""


async def test_a_module_store_deletes_securely_and_empties_its_wal_on_close(
    tmp_path: Path,
) -> None:
    database = tmp_path / "users.db"
    store = UsersStore(f"sqlite:///{database}")
    await store.open()
    try:
        async with store.reading() as connection:
            secure = (await connection.execute(sa.text("PRAGMA secure_delete"))).scalar()
        assert secure == 1
        assert wal_of(database) != b""  # migrations wrote through the WAL
    finally:
        await store.close()

    assert wal_of(database) == b""


async def test_the_orders_documents_delete_securely_and_empty_their_wal_on_close(
    tmp_path: Path,
) -> None:
    database = tmp_path / "orders.db"
    store = SqliteOrderDocuments(str(database), f"sqlite:///{database}")
    await store.open()
    try:
        assert store._db.execute("PRAGMA secure_delete").fetchone() == (1,)
    finally:
        await store.close()

    assert wal_of(database) == b""
    with sqlite3.connect(database) as db:  # still whole after the checkpoint
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
