"""The orders documents on the pymongo adapter carry a schema version with upgrade steps, as
the SQLite documents do (docs/decisions/0028-migrations.md); tested on mongomock (no MongoDB
server on this project's machines)."""

from __future__ import annotations

from typing import Any

import mongomock
import pytest

from app.kernel.migrations import UNVERSIONED, SchemaRefused, check_schemas
from app.modules.orders.store_mongo import MONGO_HEAD, PymongoOrderDocuments

pytestmark = pytest.mark.anyio


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
