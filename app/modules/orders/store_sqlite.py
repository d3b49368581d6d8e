"""Order documents as JSON rows in SQLite: the embedded adapter of documents.py's port.

stdlib sqlite3 on the event loop: a call costs tens of µs, less than a hop to a thread.
Its schema has a version in `schema_version` and upgrade steps (docs/decisions/0028-migrations.md).
What the purge reads is a column (docs/decisions/0038-orders-store-outages-and-purges.md): it
finds and drops with indexed statements, and never decodes an order.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from app.kernel.data_dir import make_private_database
from app.kernel.ids import utcnow
from app.kernel.migrations import SchemaState, SqlVersionRecord, UpgradeSteps
from app.kernel.sql import CHECKPOINT, tune_sqlite
from app.modules.orders.documents import (
    DuplicateIdempotencyKey,
    DuplicateOrder,
    check_set_fields,
    stamp,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    status TEXT NOT NULL,
    has_outbox INTEGER NOT NULL,
    idempotency_key TEXT,
    doc TEXT NOT NULL,
    handled_at TEXT,
    idempotency_expires_at TEXT
);
CREATE INDEX IF NOT EXISTS orders_by_user ON orders (user_id, id);
CREATE INDEX IF NOT EXISTS orders_by_status ON orders (status, id);
-- Partial: once relayed, almost no order has pending events, so this index stays tiny.
CREATE INDEX IF NOT EXISTS orders_with_outbox ON orders (id) WHERE has_outbox = 1;
CREATE UNIQUE INDEX IF NOT EXISTS orders_by_idempotency_key ON orders (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- Partial: the orders whose inbox ids the purge will empty one day.
CREATE INDEX IF NOT EXISTS orders_with_handled ON orders (handled_at)
    WHERE handled_at IS NOT NULL;
-- Partial: the orders holding an idempotency key, by when it expires (a stamp).
CREATE INDEX IF NOT EXISTS orders_by_key_expiry ON orders (idempotency_expires_at)
    WHERE idempotency_expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS users (
    user_id TEXT PRIMARY KEY,
    sequence INTEGER NOT NULL
);
"""

_encoder = msgspec.json.Encoder()

PURGE_BATCH = 200  # orders per purge transaction: a few ms of the loop each

# An order's idempotency key dropped, in SQL: the document loses its `idempotency` without
# being decoded here (SQLite's json_remove), and the key's columns go with it.
DROP_KEY = (
    "UPDATE orders SET doc = json_remove(doc, '$.idempotency'), idempotency_key = NULL, "
    "idempotency_expires_at = NULL"
)
# One batch of the expired keys, found by the partial index on their expiry.
PURGE_EXPIRED_KEYS = (
    f"{DROP_KEY} WHERE id IN (SELECT id FROM orders "
    "WHERE idempotency_expires_at IS NOT NULL AND idempotency_expires_at < :now LIMIT :batch)"
)
# One batch of the inboxes stamped before the cutoff: how many ids each holds, then emptied.
HANDLED_BEFORE = (
    "SELECT id, json_array_length(doc, '$.handled') FROM orders "
    "WHERE handled_at IS NOT NULL AND handled_at < :cutoff LIMIT :batch"
)
EMPTY_HANDLED = (
    "UPDATE orders SET handled_at = NULL, "
    "doc = json_remove(json_set(doc, '$.handled', json('[]')), '$.handled_at') WHERE id = ?"
)


def _create_head(db: sqlite3.Connection) -> None:
    # One statement at a time: executescript would commit the migration's transaction.
    for statement in SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)


def _add_handled_at(db: sqlite3.Connection) -> None:
    """Version 1 to 2: `handled_at`, when an id was last added to an order's inbox, for the
    purge (docs/decisions/0035-retention.md). An order that has handled ids is stamped now:
    when they came is not known, so they go one retention after the upgrade, never sooner."""
    db.execute("ALTER TABLE orders ADD COLUMN handled_at TEXT")
    now = stamp(utcnow())
    rows = db.execute(
        "SELECT doc FROM orders WHERE json_array_length(doc, '$.handled') > 0"
    ).fetchall()
    for (text,) in rows:
        db.execute(
            "UPDATE orders SET handled_at = :handled_at, doc = :doc WHERE id = :id",
            _columns({**_decode(text), "handled_at": now}),
        )
    db.execute(
        "CREATE INDEX orders_with_handled ON orders (handled_at) WHERE handled_at IS NOT NULL"
    )


def _add_key_expiry(db: sqlite3.Connection) -> None:
    """Version 2 to 3: `idempotency_expires_at`, when an order's key expires as a stamp, so
    the purge finds the expired keys by an index rather than by decoding every order that
    holds one (docs/decisions/0038-orders-store-outages-and-purges.md)."""
    db.execute("ALTER TABLE orders ADD COLUMN idempotency_expires_at TEXT")
    rows = db.execute(
        "SELECT id, json_extract(doc, '$.idempotency.expires_at') FROM orders "
        "WHERE idempotency_key IS NOT NULL"
    ).fetchall()
    db.executemany(
        "UPDATE orders SET idempotency_expires_at = ? WHERE id = ?",
        [(key_expiry(expires_at), order_id) for order_id, expires_at in rows if expires_at],
    )
    db.execute(
        "CREATE INDEX orders_by_key_expiry ON orders (idempotency_expires_at) "
        "WHERE idempotency_expires_at IS NOT NULL"
    )


# Version 1: the schema of release 8e8cbb7. A change to SCHEMA is a new step here, version
# N to N+1, and SCHEMA stays what an empty store is created as: the head.
SCHEMA_STEPS = UpgradeSteps[sqlite3.Connection](
    "orders", create=_create_head, steps=(_add_handled_at, _add_key_expiry)
)


def key_expiry(expires_at: str) -> str:
    """An idempotency key's expiry (an ISO date of any precision, Z or offset) as a stamp:
    stamps compare as strings as the dates compare (documents.py `stamp`)."""
    return stamp(datetime.fromisoformat(expires_at))


def _version_record(db: sqlite3.Connection) -> SqlVersionRecord:
    def tables() -> set[str]:
        return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}

    return SqlVersionRecord(
        lambda sql, parameters: db.execute(sql, parameters).fetchall(),
        "orders",
        ("orders", "users"),
        tables,
    )


def _state_of_file(path: str | None) -> SchemaState:
    missing = path is None or not Path(path).exists()
    db = sqlite3.connect(":memory:" if missing else str(path), isolation_level=None)
    try:
        return SCHEMA_STEPS.state(_version_record(db))
    finally:
        db.close()


def _add_idempotency_key(db: sqlite3.Connection) -> None:
    """A data dir from before the column (older than release 8e8cbb7, which had no versions)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(orders)")}
    if columns and "idempotency_key" not in columns:
        db.execute("ALTER TABLE orders ADD COLUMN idempotency_key TEXT")


def _decode(text: str) -> dict[str, Any]:
    doc: dict[str, Any] = msgspec.json.decode(text)
    return doc


class SqliteOrderDocuments:
    """One connection; every mutation is one BEGIN IMMEDIATE transaction with no await inside."""

    def __init__(self, path: str | None, url: str) -> None:
        self.path = path
        self.kind = "sqlite-documents"
        self.display_url = url
        self._connection: sqlite3.Connection | None = None

    @property
    def _db(self) -> sqlite3.Connection:
        if self._connection is None:
            raise RuntimeError("the orders store is not open")
        return self._connection

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._db
        # IMMEDIATE takes the write lock up front, so a read-modify-write cannot interleave.
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    async def open(self) -> None:
        if self._connection is not None:
            return
        if self.path is not None:
            make_private_database(Path(self.path))
        # isolation_level=None: we issue BEGIN/COMMIT ourselves. check_same_thread=False: the
        # loop that uses the store may run on another thread than the one that opened it.
        db = sqlite3.connect(self.path or ":memory:", isolation_level=None, check_same_thread=False)
        tune_sqlite(db, on_disk=self.path is not None)
        self._connection = db
        try:
            await self.migrate()
        except BaseException:
            self._connection = None
            db.close()
            raise

    @property
    def versioned(self) -> bool:
        return True

    async def schema_state(self) -> SchemaState:
        """Read from the open connection, or from the file (not made when missing)."""
        if self._connection is not None:
            return SCHEMA_STEPS.state(_version_record(self._connection))
        return _state_of_file(self.path)

    async def migrate(self) -> SchemaState:
        """To the head in one BEGIN IMMEDIATE transaction; SchemaRefused if ahead."""
        if self._connection is None:
            await self.open()  # opening migrates
            return await self.schema_state()
        with self._transaction() as db:
            _add_idempotency_key(db)
            return SCHEMA_STEPS.upgrade(db, _version_record(db))

    async def ping(self) -> None:
        self._db.execute("SELECT 1").fetchone()

    async def close(self) -> None:
        if self._connection is not None:
            if self.path is not None:
                self._connection.execute(CHECKPOINT)
            self._connection.close()
            self._connection = None

    async def insert_order(self, doc: dict[str, Any]) -> None:
        stored = {**doc, "rev": 1}
        try:
            with self._transaction() as db:
                db.execute(
                    "INSERT INTO orders (id, user_id, status, has_outbox, idempotency_key, "
                    "idempotency_expires_at, handled_at, doc) VALUES (:id, :user_id, :status, "
                    ":has_outbox, :idempotency_key, :idempotency_expires_at, :handled_at, :doc)",
                    _columns(stored),
                )
        except sqlite3.IntegrityError as error:
            if "idempotency_key" in str(error):
                raise DuplicateIdempotencyKey(stored["idempotency"]["key"]) from error
            raise DuplicateOrder(stored["_id"]) from error

    async def get_order(self, order_id: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT doc FROM orders WHERE id = ?", (order_id,)).fetchone()
        return None if row is None else _decode(row[0])

    async def update_order(
        self,
        order_id: str,
        *,
        expected_rev: int,
        set_fields: dict[str, Any],
        push_outbox: Sequence[dict[str, Any]] = (),
        add_handled: str | None = None,
    ) -> dict[str, Any] | None:
        check_set_fields(set_fields, push_outbox, add_handled)
        with self._transaction() as db:
            row = db.execute("SELECT doc FROM orders WHERE id = ?", (order_id,)).fetchone()
            if row is None:
                return None
            doc = _decode(row[0])
            if doc["rev"] != expected_rev:
                return None
            doc.update(set_fields)
            if push_outbox:
                doc.setdefault("outbox", []).extend(push_outbox)
            if add_handled is not None:
                doc.setdefault("handled", []).append(add_handled)
                doc["handled_at"] = stamp(utcnow())
            doc["rev"] = expected_rev + 1
            db.execute(
                "UPDATE orders SET user_id = :user_id, status = :status, "
                "has_outbox = :has_outbox, handled_at = :handled_at, doc = :doc WHERE id = :id",
                _columns(doc),
            )
        return doc

    async def list_orders(
        self, *, user_id: str | None, status: str | None, after: str | None, limit: int
    ) -> list[dict[str, Any]]:
        if limit < 1:
            return []
        clauses: list[str] = []
        params: list[Any] = []
        for clause, value in (("user_id = ?", user_id), ("status = ?", status), ("id > ?", after)):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        where = " AND ".join(clauses) or "1"
        rows = self._db.execute(
            f"SELECT doc FROM orders WHERE {where} ORDER BY id LIMIT ?", (*params, limit)
        )
        return [_decode(text) for (text,) in rows]

    async def pending_outbox(self, limit: int) -> list[dict[str, Any]]:
        if limit < 1:
            return []
        rows = self._db.execute(
            "SELECT doc FROM orders WHERE has_outbox = 1 ORDER BY id LIMIT ?", (limit,)
        )
        return [_decode(text) for (text,) in rows]

    async def remove_outbox_events(self, order_id: str, event_ids: Sequence[str]) -> None:
        removed = set(event_ids)
        with self._transaction() as db:
            row = db.execute("SELECT doc FROM orders WHERE id = ?", (order_id,)).fetchone()
            if row is None:
                return
            doc = _decode(row[0])
            outbox = doc.get("outbox", [])
            kept = [event for event in outbox if event.get("id") not in removed]
            if len(kept) == len(outbox):
                return
            doc["outbox"] = kept
            db.execute(
                "UPDATE orders SET has_outbox = :has_outbox, doc = :doc WHERE id = :id",
                _columns(doc),
            )

    async def remember_user(self, user_id: str, sequence: int) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO users (user_id, sequence) VALUES (?, ?) ON CONFLICT (user_id) "
                "DO UPDATE SET sequence = max(sequence, excluded.sequence)",
                (user_id, sequence),
            )

    async def find_by_idempotency_key(self, key: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT doc FROM orders WHERE idempotency_key = ?", (key,)
        ).fetchone()
        return None if row is None else _decode(row[0])

    async def forget_idempotency_key(self, order_id: str) -> None:
        with self._transaction() as db:
            db.execute(f"{DROP_KEY} WHERE id = ?", (order_id,))

    async def purge(self, cutoff: datetime, now: datetime) -> dict[str, int]:
        """In transactions of PURGE_BATCH orders, yielding the loop between them: the first
        purge of a large store must not hold the loop or the write lock for long."""
        inbox = keys = 0
        more = True
        while more:
            ids, more = self._purge_handled(stamp(cutoff))
            inbox += ids
            await asyncio.sleep(0)
        more = True
        while more:
            dropped = self._purge_expired_keys(stamp(now))
            keys += dropped
            more = dropped == PURGE_BATCH
            await asyncio.sleep(0)
        return {"inbox": inbox, "idempotency_keys": keys}

    def _purge_handled(self, cutoff: str) -> tuple[int, bool]:
        """Empty the inboxes of one batch of orders stamped before the cutoff; how many ids
        went and whether a batch may be left. The revision stays: what a concurrent
        update_order reads inside its own transaction stays right."""
        with self._transaction() as db:
            rows = db.execute(HANDLED_BEFORE, {"cutoff": cutoff, "batch": PURGE_BATCH}).fetchall()
            db.executemany(EMPTY_HANDLED, [(order_id,) for order_id, _ in rows])
        return sum(count or 0 for _, count in rows), len(rows) == PURGE_BATCH

    def _purge_expired_keys(self, now: str) -> int:
        """Drop one batch of the keys that expired before `now` (a stamp); how many went."""
        with self._transaction() as db:
            return db.execute(PURGE_EXPIRED_KEYS, {"now": now, "batch": PURGE_BATCH}).rowcount

    async def knows_user(self, user_id: str) -> bool:
        row = self._db.execute("SELECT 1 FROM users WHERE user_id = ?", (user_id,)).fetchone()
        return row is not None

    async def user_sequence(self, user_id: str) -> int | None:
        row = self._db.execute(
            "SELECT sequence FROM users WHERE user_id = ?", (user_id,)
        ).fetchone()
        return None if row is None else int(row[0])


def _columns(doc: dict[str, Any]) -> dict[str, Any]:
    """The indexed columns copied out of the document, and the document itself."""
    idempotency = doc.get("idempotency") or {}
    expires_at = idempotency.get("expires_at")
    return {
        "id": doc["_id"],
        "user_id": doc["user_id"],
        "status": doc["status"],
        "has_outbox": 1 if doc.get("outbox") else 0,
        "idempotency_key": idempotency.get("key"),
        "idempotency_expires_at": None if expires_at is None else key_expiry(expires_at),
        "handled_at": doc.get("handled_at"),
        "doc": _encoder.encode(doc).decode(),
    }
