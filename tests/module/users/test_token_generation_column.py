"""A users store made before tokens had generations opens with the column added, on SQLite
and on PostgreSQL: its users keep their accounts, at generation 1, so the tokens they held
(which carry no generation) are refused and a new login works."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from app.kernel.ids import new_id, utcnow
from app.kernel.sql import SqlDatabase
from app.modules.users.store import UsersStore, users
from tests.support.stores import postgres_databases

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
async def users_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'users.db'}"
    else:
        async with postgres_databases(("users",)) as urls:
            yield urls["users"]


async def an_old_users_table(url: str) -> str:
    """The users table as it was, with one user in it: that user's id."""
    before = sa.MetaData()
    old_users = sa.Table(
        "users",
        before,
        *(
            sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
            for c in users.columns
            if c.name != "token_generation"
        ),
    )
    database = SqlDatabase(url, before)
    await database.open()
    user_id, now = new_id(), utcnow()
    try:
        async with database.transaction() as connection:
            await connection.execute(
                old_users.insert().values(
                    id=user_id,
                    name="Old",
                    email="old@example.com",
                    email_key="old@example.com",
                    password_hash="x",
                    role="admin",
                    created_at=now,
                    updated_at=now,
                    version=1,
                    event_sequence=1,
                )
            )
    finally:
        await database.close()
    return user_id


async def test_an_old_users_table_gains_token_generation_at_open(users_url: str) -> None:
    user_id = await an_old_users_table(users_url)

    store = UsersStore(users_url)
    await store.open()
    try:
        stored = await store.get(user_id)
        credentials = await store.credentials(user_id)
    finally:
        await store.close()
    again = UsersStore(users_url)
    await again.open()  # the column is there now: opening changes nothing
    await again.close()

    assert stored is not None and stored.token_generation == 1
    assert credentials == (1, "admin")
