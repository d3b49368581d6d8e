"""The SQLite orders documents find expired idempotency keys by a column, not by decoding
every order that holds one (docs/decisions/0038-orders-store-outages-and-purges.md): the
purge is one indexed statement per batch, drops only the keys that expired, compared as
dates, and an older store gets the column by its upgrade step, on opening and by
`python -m app migrate` (migrate_stores)."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from app.kernel.ids import isoformat, utcnow
from app.kernel.migrations import UNVERSIONED, migrate_stores
from app.modules.orders.store_sqlite import (
    PURGE_BATCH,
    PURGE_EXPIRED_KEYS,
    SCHEMA_STEPS,
    SqliteOrderDocuments,
)
from tests.unit.kernel.test_upgrade_steps import RELEASE_ORDERS_SCHEMA

pytestmark = pytest.mark.anyio

ORDERS = 1_000


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def an_order(order_id: str, expires_at: str | None) -> dict[str, Any]:
    document: dict[str, Any] = {
        "_id": order_id,
        "user_id": "user-1",
        "status": "PAID",
        "total": 2500,
        "outbox": [],
        "handled": [],
    }
    if expires_at is not None:
        document["idempotency"] = {
            "key": f"scope\x1f{order_id}",
            "fingerprint": "f",
            "status": 201,
            "body": json.dumps({"id": order_id}),
            "expires_at": expires_at,
        }
    return document


def expiries(now: datetime) -> dict[str, tuple[str | None, bool]]:
    """Order id -> (its key's expiry as stored, whether it has expired at `now`)."""
    whole_second = now.replace(microsecond=0)
    cases: dict[str, tuple[str | None, bool]] = {
        # ISO dates drop zero microseconds: "…:07Z" sorts after "…:07.5Z" as text.
        "at-the-second-before": (isoformat(whole_second), True),
        "a-microsecond-before": (isoformat(now - timedelta(microseconds=1)), True),
        "exactly-now": (isoformat(now), False),
        "an-offset-before": (
            (now - timedelta(seconds=1)).astimezone(timezone(timedelta(hours=2))).isoformat(),
            True,
        ),
        "an-offset-after": (
            (now + timedelta(seconds=1)).astimezone(timezone(timedelta(hours=-5))).isoformat(),
            False,
        ),
        "no-key": (None, False),
    }
    for n in range(ORDERS):
        gone = n % 10 == 0
        cases[f"o{n:05d}"] = (isoformat(now + timedelta(hours=-1 if gone else 1)), gone)
    return cases


async def test_the_purge_drops_only_expired_keys_by_an_index_without_decoding_an_order(
    tmp_path: Path,
) -> None:
    now = utcnow().replace(microsecond=500_000)
    cases = expiries(now)
    path = tmp_path / "orders.db"
    store = SqliteOrderDocuments(str(path), f"sqlite:///{path}")
    await store.open()
    try:
        for order_id, (expires_at, _) in cases.items():
            await store.insert_order(an_order(order_id, expires_at))
        statements: list[str] = []
        store._db.set_trace_callback(statements.append)

        purged = await store.purge(now - timedelta(days=7), now)

        store._db.set_trace_callback(None)
        gone = {order_id for order_id, (_, expired) in cases.items() if expired}
        assert purged == {"inbox": 0, "idempotency_keys": len(gone)} and len(gone) > 100
        for order_id, (expires_at, expired) in cases.items():
            document = await store.get_order(order_id)
            assert document is not None
            found = await store.find_by_idempotency_key(f"scope\x1f{order_id}")
            if expired or expires_at is None:
                assert "idempotency" not in document and found is None, order_id
                assert document == {**an_order(order_id, None), "rev": 1}  # the rest stays
            else:
                assert document["idempotency"]["expires_at"] == expires_at, order_id
                assert found is not None and found["_id"] == order_id
        # One statement dropped every expired key (fewer than a batch); no order's text
        # came out of SQLite to be decoded.
        assert len(gone) < PURGE_BATCH
        assert sum(s.startswith("UPDATE orders SET doc = json_remove") for s in statements) == 1
        assert not [s for s in statements if s.startswith(("SELECT doc", "SELECT id, doc"))]
        assert await store.purge(now - timedelta(days=7), now) == {
            "inbox": 0,
            "idempotency_keys": 0,
        }
    finally:
        await store.close()

    plan = query_plan(path, PURGE_EXPIRED_KEYS, {"now": "x", "batch": PURGE_BATCH})
    assert "orders_by_key_expiry" in plan and "SCAN orders" not in plan, plan


async def test_the_purge_goes_batch_by_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("app.modules.orders.store_sqlite.PURGE_BATCH", 3)
    store = SqliteOrderDocuments(None, "sqlite:///:memory:")
    await store.open()
    now = utcnow()
    try:
        for n in range(10):
            expires = now + timedelta(hours=1 if n == 4 else -1)
            await store.insert_order(an_order(f"o{n}", isoformat(expires)))
        assert await store.purge(now, now) == {"inbox": 0, "idempotency_keys": 9}
        kept = await store.get_order("o4")
        assert kept is not None and "idempotency" in kept
    finally:
        await store.close()


def query_plan(path: Path, statement: str, parameters: dict[str, Any]) -> str:
    db = sqlite3.connect(path)
    try:
        rows = db.execute(f"EXPLAIN QUERY PLAN {statement}", parameters).fetchall()
    finally:
        db.close()
    return " | ".join(row[-1] for row in rows)


def release_store(path: Path, now: datetime) -> None:
    """An orders store as release 8e8cbb7 left it (version 1), two orders holding a key."""
    db = sqlite3.connect(path)
    db.executescript(RELEASE_ORDERS_SCHEMA)
    for order_id, expires in (("old", now - timedelta(hours=1)), ("live", now + timedelta(days=1))):
        document = {**an_order(order_id, isoformat(expires)), "rev": 2}
        db.execute(
            "INSERT INTO orders VALUES (?, 'user-1', 'PAID', 0, ?, ?)",
            (order_id, document["idempotency"]["key"], json.dumps(document)),
        )
    db.commit()
    db.close()


def schema_of(path: Path) -> tuple[list[str], set[tuple[str, str]]]:
    db = sqlite3.connect(path)
    try:
        columns = [row[1] for row in db.execute("PRAGMA table_info(orders)")]
        indexes = {
            (name, " ".join(sql.split()).replace("IF NOT EXISTS ", ""))
            for name, sql in db.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
            )
        }
    finally:
        db.close()
    return columns, indexes


@pytest.mark.parametrize("how", ["opening", "migrate"])
async def test_a_store_from_before_the_column_gets_it_at_the_upgrade(
    tmp_path: Path, how: str
) -> None:
    now = datetime.now(UTC)
    path = tmp_path / "orders.db"
    release_store(path, now)
    store = SqliteOrderDocuments(str(path), f"sqlite:///{path}")
    assert (await store.schema_state()).current == UNVERSIONED
    if how == "migrate":  # what `python -m app migrate` runs on each store
        report = await migrate_stores([store], check=False)
        assert report.after[0].current == str(SCHEMA_STEPS.head) == "3"
    await store.open()
    try:
        assert (await store.schema_state()).at_head
        assert await store.purge(now - timedelta(days=7), now) == {
            "inbox": 0,
            "idempotency_keys": 1,
        }
        assert await store.find_by_idempotency_key("scope\x1fold") is None
        live = await store.find_by_idempotency_key("scope\x1flive")
        assert live is not None and live["rev"] == 2
    finally:
        await store.close()

    fresh = tmp_path / "fresh.db"
    made = SqliteOrderDocuments(str(fresh), f"sqlite:///{fresh}")
    await made.open()
    await made.close()
    assert schema_of(path) == schema_of(fresh)  # the steps make what an empty store gets
