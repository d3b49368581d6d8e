"""The orders store's retention (docs/decisions/0035-retention.md), on every adapter: the
inbox ids of an order that handled nothing since the cutoff go, expired idempotency keys go,
and nothing else does: younger ids, live keys and the events waiting in an outbox stay."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.kernel.ids import isoformat, utcnow
from app.modules.orders.documents import OrderDocuments, stamp
from app.modules.orders.store import open_order_documents
from app.modules.orders.store_sqlite import SCHEMA_STEPS, SqliteOrderDocuments
from tests.unit.kernel.test_upgrade_steps import RELEASE_ORDERS_SCHEMA

pytestmark = pytest.mark.anyio

URLS = {
    "sqlite-memory": "sqlite:///:memory:",
    "mongomock": "mongomock://localhost/orders_retention",
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite-memory", "sqlite-file", "mongomock"])
async def documents(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[OrderDocuments]:
    url = URLS.get(request.param, f"sqlite:///{tmp_path}/data/orders.db")
    store = open_order_documents(url)
    await store.open()
    yield store
    await store.close()


def an_order(
    order_id: str,
    *,
    handled: list[str] | None = None,
    handled_at: datetime | None = None,
    key_expires: datetime | None = None,
    outbox: list[str] | None = None,
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "_id": order_id,
        "user_id": "user-1",
        "status": "PAID",
        "updated_at": isoformat(utcnow() - timedelta(days=400)),  # not what the purge reads
        "outbox": [{"id": event, "type": "OrderPlaced"} for event in outbox or []],
        "handled": handled or [],
    }
    if handled_at is not None:
        document["handled_at"] = stamp(handled_at)
    if key_expires is not None:
        document["idempotency"] = {
            "key": f"scope\x1f{order_id}",
            "fingerprint": "f",
            "status": 201,
            "body": "{}",
            "expires_at": isoformat(key_expires),
        }
    return document


async def test_old_inbox_ids_and_expired_keys_go_and_the_rest_stays(
    documents: OrderDocuments,
) -> None:
    now = utcnow()
    cutoff = now - timedelta(days=7)
    old, young = now - timedelta(days=8), now - timedelta(days=6)
    await documents.insert_order(
        an_order("old", handled=["e1", "e2"], handled_at=old, key_expires=now - timedelta(hours=1))
    )
    await documents.insert_order(
        an_order("young", handled=["e3"], handled_at=young, key_expires=now + timedelta(hours=1))
    )
    await documents.insert_order(
        an_order("waiting", handled=["e4"], handled_at=old, outbox=["ev-out"])
    )

    purged = await documents.purge(cutoff, now)

    assert purged == {"inbox": 3, "idempotency_keys": 1}
    old_doc, young_doc, waiting = [
        await documents.get_order(i) for i in ("old", "young", "waiting")
    ]
    assert old_doc is not None and young_doc is not None and waiting is not None
    assert old_doc["handled"] == [] and "idempotency" not in old_doc
    assert young_doc["handled"] == ["e3"] and young_doc["idempotency"]["status"] == 201
    assert [event["id"] for event in waiting["outbox"]] == ["ev-out"]  # never purged
    assert await documents.find_by_idempotency_key("scope\x1fold") is None
    assert await documents.find_by_idempotency_key("scope\x1fyoung") is not None
    assert [d["_id"] for d in await documents.pending_outbox(10)] == ["waiting"]
    assert await documents.purge(cutoff, now) == {"inbox": 0, "idempotency_keys": 0}


async def test_an_id_added_after_a_purge_stamps_the_order_again(
    documents: OrderDocuments,
) -> None:
    now = utcnow()
    await documents.insert_order(an_order("o", handled=["e1"], handled_at=now - timedelta(days=9)))
    await documents.purge(now - timedelta(days=7), now)

    written = await documents.update_order("o", expected_rev=1, set_fields={}, add_handled="e2")

    assert written is not None and written["handled"] == ["e2"]
    assert await documents.purge(now - timedelta(days=7), utcnow()) == {
        "inbox": 0,
        "idempotency_keys": 0,
    }
    assert await documents.purge(utcnow() + timedelta(seconds=1), utcnow()) == {
        "inbox": 1,
        "idempotency_keys": 0,
    }


async def test_a_version_1_store_stamps_its_handled_ids_at_the_upgrade(tmp_path: Path) -> None:
    """The step 1 -> 2: when an old order's ids came is not known, so they go one retention
    after the upgrade, never sooner."""
    path = tmp_path / "orders.db"
    db = sqlite3.connect(path)
    db.executescript(RELEASE_ORDERS_SCHEMA)
    db.execute(
        "INSERT INTO orders VALUES ('o-1', 'u-1', 'PAID', 0, NULL, "
        """'{"_id": "o-1", "user_id": "u-1", "status": "PAID", "rev": 3, "handled": ["e1"]}')"""
    )
    db.commit()
    db.close()
    store = SqliteOrderDocuments(str(path), f"sqlite:///{path}")
    before = utcnow()
    await store.open()
    try:
        assert (await store.schema_state()).current == str(SCHEMA_STEPS.head)
        document = await store.get_order("o-1")
        assert document is not None and document["handled_at"] >= stamp(before)
        assert (await store.purge(before, utcnow()))["inbox"] == 0
        assert (await store.purge(utcnow() + timedelta(seconds=1), utcnow()))["inbox"] == 1
    finally:
        await store.close()


# The invariant, on random stores: a purge removes an inbox id only from an order stamped
# before the cutoff, a key only once it expired, and never an outbox event.
order_specs = st.lists(
    st.tuples(
        st.integers(-5_000, 5_000),  # handled_at, ms from the cutoff
        st.one_of(st.none(), st.integers(-5_000, 5_000)),  # key expiry, ms from now
        st.integers(0, 2),  # events waiting in the outbox
    ),
    max_size=12,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=order_specs, adapter=st.sampled_from(sorted(URLS)))
def test_purge_never_removes_what_is_younger_than_the_cutoff(
    specs: list[tuple[int, int | None, int]], adapter: str
) -> None:
    asyncio.run(_check_purge(specs, URLS[adapter]))


async def _check_purge(specs: list[tuple[int, int | None, int]], url: str) -> None:
    store = open_order_documents(url)
    await store.open()
    now = utcnow()
    cutoff = now - timedelta(days=7)
    try:
        for n, (handled_ms, expiry_ms, waiting) in enumerate(specs):
            await store.insert_order(
                an_order(
                    f"o{n}",
                    handled=[f"e{n}"],
                    handled_at=cutoff + timedelta(milliseconds=handled_ms),
                    key_expires=None
                    if expiry_ms is None
                    else now + timedelta(milliseconds=expiry_ms),
                    outbox=[f"out{n}-{k}" for k in range(waiting)],
                )
            )
        purged = await store.purge(cutoff, now)
        inbox = keys = 0
        for n, (handled_ms, expiry_ms, waiting) in enumerate(specs):
            document = await store.get_order(f"o{n}")
            assert document is not None
            assert len(document["outbox"]) == waiting
            assert (document["handled"] == []) == (handled_ms < 0)
            inbox += handled_ms < 0
            if expiry_ms is not None:
                assert ("idempotency" not in document) == (expiry_ms < 0)
                keys += expiry_ms < 0
        assert purged == {"inbox": inbox, "idempotency_keys": keys}
    finally:
        await store.close()


async def test_the_sqlite_purge_goes_batch_by_batch_to_the_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("app.modules.orders.store_sqlite.PURGE_BATCH", 2)
    store = open_order_documents("sqlite:///:memory:")
    await store.open()
    now = utcnow()
    try:
        for n in range(7):
            expires = now + timedelta(hours=1 if n == 3 else -1)
            handled_at = now - timedelta(days=1 if n == 5 else 8)
            await store.insert_order(
                an_order(f"o{n}", handled=[f"e{n}"], handled_at=handled_at, key_expires=expires)
            )
        assert await store.purge(now - timedelta(days=7), now) == {
            "inbox": 6,
            "idempotency_keys": 6,
        }
        kept = await store.get_order("o3")
        assert kept is not None and "idempotency" in kept
        young = await store.get_order("o5")
        assert young is not None and young["handled"] == ["e5"]
    finally:
        await store.close()
