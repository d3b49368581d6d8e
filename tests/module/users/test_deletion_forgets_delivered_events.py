"""A user's deletion removes the delivered outbox rows about that user, and only those, with
one indexed statement: on a users store made new and on one upgraded from the schema before
the outbox had `aggregate_id` (docs/decisions/0030-crypto-shredding.md,
docs/decisions/0039-outbox-aggregate-column.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.dialects import sqlite

from app.bus.envelope import decode
from app.bus.sql_outbox import _delete_delivered_of
from app.modules.users.module import module as users_module
from app.modules.users.store import UsersStore, outbox
from tests.support.release_tables import migrations_of
from tests.support.scenario import Scenario, scenario
from tests.support.stores import postgres_databases

pytestmark = pytest.mark.anyio

PASSWORD = "correct horse battery"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
async def users_settings(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[dict[str, str]]:
    """Where the users store lives, kept across runs of the module (one file, or a database)."""
    if request.param == "sqlite":
        yield {"data_dir": str(tmp_path / "var"), "ephemeral": "false"}
        return
    async with postgres_databases(("users",)) as urls:
        yield {"ephemeral": "true", "users_db_url": urls["users"]}


def store_of(users: Scenario) -> UsersStore:
    return cast(UsersStore, users.store)


class Row:
    def __init__(self, position: int, envelope: bytes, column: str, delivered: bool) -> None:
        self.position = position
        self.envelope = decode(envelope)
        self.column = column  # what the outbox's aggregate_id column says
        self.delivered = delivered


async def outbox_rows(store: UsersStore) -> list[Row]:
    query = sa.text(
        "SELECT position, envelope, aggregate_id, delivered_at FROM outbox ORDER BY position"
    )
    async with store.reading() as connection:
        return [
            Row(row[0], bytes(row[1]), row[2], row[3] is not None)
            for row in await connection.execute(query)
        ]


async def three_users_one_changed(users: Scenario) -> list[str]:
    """Three users registered, the first renamed, every event delivered: their ids."""
    ids = []
    for n in range(3):
        response = await users.client.post(
            "/api/users",
            json={"name": f"User {n}", "email": f"user.{n}@example.com", "password": PASSWORD},
        )
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    renamed = await users.client.patch(f"/api/users/{ids[0]}", json={"name": "Renamed"})
    assert renamed.status_code == 200, renamed.text
    await users.settle()
    return ids


async def delete_and_check(users: Scenario, gone: str) -> None:
    """Delete `gone`: every row about another user stays, the rows delivered about `gone`
    go, and its UserDeleted is sent."""
    before = await outbox_rows(store_of(users))
    assert [r.envelope.type for r in before if r.envelope.aggregate_id == gone] == [
        "UserRegistered",
        "UserUpdated",
    ]
    assert all(r.delivered and r.column == r.envelope.aggregate_id for r in before)
    others = [r.position for r in before if r.envelope.aggregate_id != gone]
    assert len(others) >= 2

    response = await users.client.delete(f"/api/users/{gone}")
    await users.settle()

    assert response.status_code == 204, response.text
    after = await outbox_rows(store_of(users))
    assert [r.position for r in after if r.envelope.aggregate_id != gone] == others
    [deleted] = [r for r in after if r.envelope.aggregate_id == gone]
    assert (deleted.envelope.type, deleted.column, deleted.delivered) == ("UserDeleted", gone, True)


async def test_a_deletion_on_a_new_store_removes_that_users_delivered_rows_and_no_others(
    users_settings: dict[str, Any],
) -> None:
    async with scenario(users_module, **users_settings) as users:
        ids = await three_users_one_changed(users)
        await delete_and_check(users, ids[0])


async def test_a_deletion_on_a_store_upgraded_from_the_schema_before_the_column(
    users_settings: dict[str, Any],
) -> None:
    async with scenario(users_module, **users_settings) as users:
        ids = await three_users_one_changed(users)
        store = store_of(users)
        async with store.transaction() as connection:  # back to the schema before the column
            await connection.run_sync(
                lambda c: command.downgrade(migrations_of(store).config(c), "0002")
            )
            columns = await connection.run_sync(
                lambda c: {column["name"] for column in sa.inspect(c).get_columns("outbox")}
            )
        assert "aggregate_id" not in columns

    async with scenario(users_module, **users_settings) as users:  # migrated on open
        assert (await store_of(users).schema_state()).at_head
        await delete_and_check(users, ids[0])


async def test_the_deletions_statement_finds_the_rows_by_the_outbox_index(tmp_path: Path) -> None:
    store = UsersStore(f"sqlite:///{tmp_path / 'users.db'}")
    await store.open()
    try:
        async with store.reading() as connection:
            sql = _delete_delivered_of(outbox).compile(dialect=sqlite.dialect())  # as erase runs
            plan = await connection.run_sync(
                lambda c: c.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", ("u",)).all()
            )
            steps = " ".join(str(row[-1]) for row in plan)
    finally:
        await store.close()
    assert "USING INDEX ix_outbox_aggregate (aggregate_id=?)" in steps, steps
