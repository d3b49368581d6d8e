"""The orders documents on the pymongo adapter carry a schema version with upgrade steps, as
the SQLite documents do (docs/decisions/0028-migrations.md); tested on mongomock (no MongoDB
server on this project's machines)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import mongomock
import pytest

from app.kernel.ids import utcnow
from app.kernel.migrations import UNVERSIONED, SchemaRefused, check_schemas
from app.modules.orders.store_mongo import MONGO_HEAD, PymongoOrderDocuments

pytestmark = pytest.mark.anyio


WRITES = frozenset(
    {
        "insert_one",
        "insert_many",
        "update_one",
        "update_many",
        "replace_one",
        "delete_one",
        "delete_many",
        "find_one_and_update",
        "find_one_and_replace",
        "find_one_and_delete",
        "bulk_write",
    }
)


class CountingWrites:
    """A collection that records every write it is asked for, whatever the write changes."""

    def __init__(self, collection: Any) -> None:
        self.collection = collection
        self.writes: list[tuple[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.collection, name)
        if name not in WRITES:
            return attribute

        def write(*args: Any, **kwargs: Any) -> Any:
            self.writes.append((name, args[0] if args else kwargs))
            return attribute(*args, **kwargs)

        return write


def documents() -> tuple[PymongoOrderDocuments, Any]:
    database: Any = mongomock.MongoClient().get_database("orders")
    return PymongoOrderDocuments(database, kind="mongomock"), database


async def test_an_empty_store_is_made_at_the_head() -> None:
    store, database = documents()
    assert (await store.schema_state()).empty

    await store.open()

    state = await store.schema_state()
    assert state.at_head and state.current == str(MONGO_HEAD) == "2"
    assert database.meta.find_one({"_id": "schema"})["version"] == MONGO_HEAD


async def test_a_store_of_the_release_before_versions_is_upgraded_step_by_step() -> None:
    store, database = documents()
    # As release 8e8cbb7 left them: no version, an order with handled ids and no handled_at.
    database.orders.insert_one({"_id": "o1", "rev": 2, "handled": ["e1"], "status": "PAID"})
    database.orders.insert_one({"_id": "o2", "rev": 1, "handled": [], "status": "PENDING"})
    before = await store.schema_state()
    assert before.current == UNVERSIONED and before.pending

    await store.open()

    assert (await store.schema_state()).at_head
    assert "handled_at" in database.orders.find_one({"_id": "o1"})  # the step ran
    assert "handled_at" not in database.orders.find_one({"_id": "o2"})  # nothing to stamp
    await store.migrate()  # at the head: nothing runs again
    assert (await store.schema_state()).at_head


async def test_production_refuses_a_store_behind_and_every_mode_one_ahead() -> None:
    behind, database = documents()
    database.orders.insert_one({"_id": "o1", "rev": 1, "handled": []})
    with pytest.raises(SchemaRefused, match="orders"):
        await check_schemas([behind], "production")
    assert (await check_schemas([behind], "development"))[0].pending

    ahead, database = documents()
    database.meta.insert_one({"_id": "schema", "version": MONGO_HEAD + 7})
    for env in ("development", "production"):
        with pytest.raises(SchemaRefused, match="newer"):
            await check_schemas([ahead], env)
    with pytest.raises(SchemaRefused):
        await ahead.open()


async def test_handled_ids_are_stamped_once_at_the_upgrade_not_at_every_purge() -> None:
    store, database = documents()
    database.orders.insert_one({"_id": "o1", "rev": 2, "handled": ["e1"], "status": "PAID"})
    await store.open()  # the step 1 -> 2 stamps it
    stamped = database.orders.find_one({"_id": "o1"})["handled_at"]
    counting = CountingWrites(store.orders)
    store.orders = counting
    now = utcnow()

    for _ in range(2):  # nothing is old enough: a purge finds nothing and writes nothing
        assert await store.purge(now - timedelta(days=7), now) == {
            "inbox": 0,
            "idempotency_keys": 0,
        }
        assert counting.writes == []
    assert database.orders.find_one({"_id": "o1"})["handled_at"] == stamped

    later = utcnow() + timedelta(seconds=1)  # one retention after the upgrade: they go
    assert (await store.purge(later, later))["inbox"] == 1
    assert [name for name, _ in counting.writes] == ["update_one"]
    counting.writes.clear()
    assert (await store.purge(later, later))["inbox"] == 0
    assert counting.writes == []  # the second run writes nothing
