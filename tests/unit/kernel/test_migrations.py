"""Each SQL module's migrations make exactly its models' schema, see only its own tables,
and a store's revision decides whether it may open (docs/decisions/0028-migrations.md)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from app.bus.sql_store import SqlModuleStore
from app.kernel.migrations import (
    UNVERSIONED,
    SchemaRefused,
    SchemaState,
    SqlMigrations,
    check_schemas,
)
from app.modules.notifications.store import NotificationsStore
from app.modules.payments.store import PaymentsStore
from app.modules.users.store import UsersStore
from tests.support.release_tables import release_tables
from tests.support.stores import postgres_databases

pytestmark = pytest.mark.anyio

STORES: dict[str, Callable[[str], SqlModuleStore]] = {
    "users": UsersStore,
    "payments": PaymentsStore,
    "notifications": NotificationsStore,
}
HOW_TO_ADD = (
    "the {module} models differ from what its migrations make: add a revision with "
    '`python -m app migrate --new {module} "what changed"` (then read and edit the file it '
    "writes in app/modules/{module}/migrations/versions/); see docs/decisions/0028-migrations.md"
)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """One empty database: an SQLite file, or a throwaway PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    async with postgres_databases(("shared",)) as urls:
        yield urls["shared"]


def migrations_of(store: SqlModuleStore) -> SqlMigrations:
    assert isinstance(store.schema, SqlMigrations)
    return store.schema


async def differences(store: SqlModuleStore) -> list[object]:
    async with store.reading() as connection:
        return await connection.run_sync(migrations_of(store).differences)


@pytest.mark.parametrize("module", STORES)
async def test_the_migrations_make_exactly_the_models_schema(
    module: str, database_url: str
) -> None:
    store = STORES[module](database_url)
    try:
        await store.open()
        state = await store.schema_state()
        assert state.at_head, state
        assert await differences(store) == [], HOW_TO_ADD.format(module=module)
    finally:
        await store.close()


async def test_autogenerate_in_one_module_sees_nothing_of_another_in_the_same_database(
    database_url: str,
) -> None:
    users, notifications = UsersStore(database_url), NotificationsStore(database_url)
    try:
        await notifications.open()
        await users.open()
        for store in (users, notifications):
            proposed = repr(await differences(store))
            others = set((notifications if store is users else users).metadata.tables)
            for table in others - set(store.metadata.tables):
                assert f"'{table}'" not in proposed, (store, table)
        for store in (users, notifications):  # each at its own head, in one database
            state = await store.schema_state()
            assert state.at_head, state
    finally:
        await users.close()
        await notifications.close()


async def test_each_module_keeps_its_revision_in_its_own_version_table(database_url: str) -> None:
    users, notifications = UsersStore(database_url), NotificationsStore(database_url)
    try:
        await notifications.open()
        assert (await users.schema_state()).empty  # notifications' tables are not the users'
        await users.open()
        tables = await users.table_names()
        assert {"alembic_version_users", "alembic_version_notifications"} <= tables
        assert "alembic_version" not in tables
    finally:
        await users.close()
        await notifications.close()


async def test_a_store_of_the_release_before_migrations_is_adopted_at_revision_1(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'payments.db'}"
    store = PaymentsStore(url)
    release_tables(store, url)  # what release 8e8cbb7 created on start
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text("INSERT INTO inbox VALUES ('e-1', 'OrderPlaced', '2026-01-01')"))
    engine.dispose()
    try:
        assert (await store.schema_state()).current == UNVERSIONED
        state = await store.migrate()
        assert state.at_head
        async with store.reading() as connection:
            rows = (await connection.execute(sa.text("SELECT event_id FROM inbox"))).all()
        assert [row[0] for row in rows] == ["e-1"]
    finally:
        await store.close()


async def test_a_store_at_a_revision_the_code_does_not_know_is_refused_in_every_mode(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'notifications.db'}"
    store = NotificationsStore(url)
    await store.open()
    async with store.transaction() as connection:
        await connection.execute(
            sa.text("UPDATE alembic_version_notifications SET version_num='0099'")
        )
    try:
        state = await store.schema_state()
        assert state.ahead
        for env in ("development", "test", "production"):
            with pytest.raises(SchemaRefused, match="revision 0099, which this code does not"):
                await check_schemas([store], env)
        with pytest.raises(SchemaRefused):
            await store.open()
    finally:
        await store.close()


async def test_production_refuses_a_store_behind_naming_it_its_revision_and_the_command(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'users.db'}"
    UsersStore(url).metadata.create_all(engine := sa.create_engine(url))
    engine.dispose()
    store = UsersStore(url)
    try:
        with pytest.raises(SchemaRefused) as refused:
            await check_schemas([store], "production")
        message = str(refused.value)
        assert "users store is at revision unversioned" in message
        assert f"head is {migrations_of(store).head}" in message
        assert "python -m app migrate" in message
        [state] = await check_schemas([store], "development")
        assert state.pending
    finally:
        await store.close()


def test_an_empty_store_is_created_in_every_mode_and_only_a_store_with_data_is_behind() -> None:
    empty = SchemaState("users", None, "0002", known=True)
    behind = SchemaState("users", "0001", "0002", known=True)
    assert not empty.pending and empty.known
    assert behind.pending
    assert "pending up to 0002" in behind.describe()


@pytest.mark.parametrize("replicas", [4])
async def test_replicas_starting_together_migrate_one_after_another(
    database_url: str, replicas: int
) -> None:
    url = database_url.replace("sqlite:///", "sqlite+aiosqlite:///")  # threads: truly at once
    stores = [PaymentsStore(url) for _ in range(replicas)]
    try:
        await asyncio.gather(*(store.open() for store in stores))
        states = [await store.schema_state() for store in stores]
        assert all(state.at_head for state in states), states
        assert await differences(stores[0]) == []
    finally:
        for store in stores:
            await store.close()


def test_a_module_process_of_the_split_checks_only_its_own_stores(tmp_path: Path) -> None:
    from app.__main__ import schema_refusal
    from app.main import default_modules
    from tests.support.seams import fast_settings

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'users.db'}")
    UsersStore("sqlite://").metadata.create_all(engine)  # users behind: the release before
    engine.dispose()
    settings = fast_settings(data_dir=str(tmp_path), env="production")
    modules = {module.name: module for module in default_modules()}
    assert schema_refusal(settings, [modules["payments"]]) is None
    refused = schema_refusal(settings, [modules["users"], modules["payments"]])
    assert refused is not None and "the users store is at revision unversioned" in refused
