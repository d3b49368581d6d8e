"""Database per service: each module's store is its own database, on every backend."""

from __future__ import annotations

import pytest

from app.kernel.sql import SqlDatabase
from tests.support.seams import Seams

pytestmark = pytest.mark.anyio

EXPECTED_TABLES = {
    "users": {"users", "user_keys", "outbox", "idempotency_keys"},
    "payments": {"payments", "processor_ledger", "outbox", "inbox"},
    "notifications": {"contacts", "notifications", "inbox"},
}


async def test_each_sql_store_holds_only_its_own_tables(seams: Seams) -> None:
    for running in seams.runtime.modules:
        store = running.store
        if not isinstance(store, SqlDatabase):
            continue
        tables = await store.table_names()
        name = running.module.name
        # and the module's own version table (docs/decisions/0028-migrations.md)
        assert tables == EXPECTED_TABLES[name] | {f"alembic_version_{name}"}, name


async def test_the_four_stores_are_four_databases(seams: Seams) -> None:
    stores = [running.store for running in seams.runtime.modules]
    assert len({id(store) for store in stores}) == 4
    urls = [store.display_url for store in stores]
    if not any(":memory:" in url or "%3Amemory%3A" in url for url in urls):
        assert len(set(urls)) == 4, urls
