"""A SQL module's store as release 8e8cbb7 left it: its tables and no version table
(tests/fixtures/releases; docs/decisions/0028-migrations.md). Revision 0001 of each module
makes exactly that release's tables, so it builds them: today's models would not do (they
hold what later revisions add)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command

from app.bus.sql_store import SqlModuleStore
from app.kernel.migrations import SqlMigrations


def migrations_of(store: SqlModuleStore) -> SqlMigrations:
    assert isinstance(store.schema, SqlMigrations)
    return store.schema


def release_tables(store: SqlModuleStore, url: str) -> None:
    """The release's tables of `store`'s module in the database at `url` (a sync URL)."""
    migrations = migrations_of(store)
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            command.upgrade(migrations.config(connection), "0001")
            connection.execute(sa.text(f"DROP TABLE {migrations.version_table}"))
    finally:
        engine.dispose()
