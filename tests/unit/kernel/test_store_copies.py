"""Copies of each store taken while it is written, and their restore
(docs/decisions/0029-backups.md)."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest

from app.kernel import backup
from app.kernel.backup import BackupError, back_up, copy_store, restore
from tests.support.stores import postgres_databases

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def backup_directories(tmp_path: Path) -> None:
    for number in range(3):
        (tmp_path / f"b{number}").mkdir()


def test_an_sqlite_copy_taken_while_a_writer_commits_is_one_consistent_snapshot(
    tmp_path: Path,
) -> None:
    source = tmp_path / "payments.db"
    db = sqlite3.connect(source)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE pairs (n INTEGER PRIMARY KEY, twice INTEGER NOT NULL)")
    db.commit()
    stop = threading.Event()

    def write() -> None:
        writer = sqlite3.connect(source, timeout=5)
        n = 0
        while not stop.is_set():
            n += 1
            with writer:  # two rows per commit: a torn copy would hold an odd count
                writer.execute("INSERT INTO pairs VALUES (?, ?)", (2 * n, 4 * n))
                writer.execute("INSERT INTO pairs VALUES (?, ?)", (2 * n + 1, 4 * n + 2))
        writer.close()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        copies = [
            copy_store("payments", f"sqlite:///{source}", tmp_path / f"b{i}") for i in range(3)
        ]
    finally:
        stop.set()
        writer.join()
    for number, copy in enumerate(copies):
        copied = sqlite3.connect(tmp_path / f"b{number}" / "payments.db")
        assert copied.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        (count,) = copied.execute("SELECT count(*) FROM pairs").fetchone()
        assert count % 2 == 0 and copy.complete
        assert copied.execute("PRAGMA journal_mode").fetchone() == ("delete",)


def test_every_sqlite_store_is_copied_as_of_one_instant(tmp_path: Path) -> None:
    # A writer commits n in the orders store, then n in the payments store (as a relay and
    # its consumer do): at every instant payments holds n or n-1 of what orders holds. Copies
    # taken one after the other would let payments run ahead of orders (a payment for an
    # order the copy does not have); one instant never does.
    stores = {name: tmp_path / f"{name}.db" for name in ("orders", "payments")}
    for path in stores.values():
        db = sqlite3.connect(path)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE seen (n INTEGER PRIMARY KEY)")
        db.commit()
        db.close()
    stop, writing = threading.Event(), threading.Event()

    def write() -> None:
        writers = {name: sqlite3.connect(path, timeout=5) for name, path in stores.items()}
        n = 0
        while not stop.is_set():
            n += 1
            for name in ("orders", "payments"):
                with writers[name]:
                    writers[name].execute("INSERT INTO seen VALUES (?)", (n,))
            if n == 10:
                writing.set()
        for writer in writers.values():
            writer.close()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert writing.wait(10)
        for number in range(3):
            copies = back_up(
                [
                    {"orders": f"sqlite:///{stores['orders']}"},
                    {"payments": f"sqlite:///{stores['payments']}"},
                ],
                tmp_path / f"b{number}",
            )
            assert all(copy.complete for copy in copies)
    finally:
        stop.set()
        writer.join()
    for number in range(3):
        held = {}
        for name in stores:
            copied = sqlite3.connect(tmp_path / f"b{number}" / f"{name}.db")
            (held[name],) = copied.execute("SELECT count(*) FROM seen").fetchone()
            copied.close()
        assert held["orders"] >= 10, held
        assert held["orders"] - 1 <= held["payments"] <= held["orders"], held


def test_a_store_that_cannot_be_copied_here_says_what_to_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mongo = copy_store("orders", "mongodb://db.example/orders", tmp_path)
    assert not mongo.complete and "mongodump --uri" in mongo.note
    memory = copy_store("users", "sqlite:///:memory:", tmp_path)
    assert not memory.complete and "in memory" in memory.note
    monkeypatch.setattr(backup.shutil, "which", lambda _name: None)
    postgres = copy_store("users", "postgresql+asyncpg://u:secret@db.example/users", tmp_path)
    assert not postgres.complete and "pg_dump is not installed" in postgres.note
    assert "secret" not in postgres.describe()


def test_a_backup_goes_only_into_a_new_or_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "b0" / "something").write_text("kept")
    with pytest.raises(BackupError, match="not an empty directory"):
        back_up([{}], tmp_path / "b0")


def test_restore_marks_what_the_outboxes_kept_undelivered_and_wants_an_empty_data_dir(
    tmp_path: Path,
) -> None:
    data = tmp_path / "var"
    data.mkdir()
    db = sqlite3.connect(data / "users.db")
    db.execute("CREATE TABLE outbox (position INTEGER PRIMARY KEY, delivered_at TEXT)")
    db.execute("INSERT INTO outbox VALUES (1, '2026-12-06'), (2, NULL), (3, '2026-12-06')")
    db.commit()
    db.close()
    copies = back_up([{"users": f"sqlite:///{data / 'users.db'}"}], tmp_path / "backup")
    assert [copy.file for copy in copies] == ["users.db"]
    assert json.loads((tmp_path / "backup" / "backup.json").read_text())["copies"]

    [restored] = restore(tmp_path / "backup", tmp_path / "restored")
    assert restored.redelivered == 2
    again = sqlite3.connect(tmp_path / "restored" / "users.db")
    assert again.execute("SELECT count(*) FROM outbox WHERE delivered_at IS NULL").fetchone() == (
        3,
    )
    with pytest.raises(BackupError, match="restore into a new data dir"):
        restore(tmp_path / "backup", tmp_path / "restored")
    with pytest.raises(BackupError, match=r"holds no backup\.json"):
        restore(tmp_path / "b1", tmp_path / "elsewhere")


@pytest.mark.services
async def test_a_postgresql_store_is_dumped_with_pg_dump_for_psql(tmp_path: Path) -> None:
    import asyncpg

    async with postgres_databases(("users",)) as urls:
        dsn = urls["users"].replace("postgresql+asyncpg://", "postgresql://")
        connection = await asyncpg.connect(dsn)
        await connection.execute("CREATE TABLE outbox (position INT, delivered_at TEXT)")
        await connection.execute("INSERT INTO outbox VALUES (1, 'then')")
        await connection.close()
        copy = copy_store("users", urls["users"], tmp_path)
    if not copy.complete and "not installed" in copy.note:
        pytest.skip(copy.note)
    assert copy.complete and copy.file == "users.sql", copy
    dump = (tmp_path / "users.sql").read_text()
    assert "CREATE TABLE public.outbox" in dump and "1\tthen" in dump
