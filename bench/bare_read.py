"""The bare read of decision 16: the "physical limit" for GET /api/users/{id}.

A Litestar app with no middleware, no dependencies, no exception handlers, reading the
same row from the same store with the same driver as Seams' users module: SQLAlchemy
async Core over aiosqlite on the users.db file Seams wrote, the same four columns Seams
answers with, out as a msgspec Struct. Served by bench/gateway_read.py with

    BARE_USERS_DB=/path/to/users.db uvicorn bare_read:app --app-dir bench \
        --loop uvloop --http httptools --no-access-log --log-level warning

Nothing here imports `app`: the bare side must not share Seams' code, only its data.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

import msgspec
import sqlalchemy as sa
from litestar import Litestar, get
from litestar.exceptions import NotFoundException
from sqlalchemy.ext.asyncio import create_async_engine

DATABASE = os.environ.get("BARE_USERS_DB", "var/users.db")

metadata = sa.MetaData()
users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("email", sa.String(254), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
read_one = sa.select(users.c.id, users.c.name, users.c.email, users.c.created_at)

engine = create_async_engine(f"sqlite+aiosqlite:///{DATABASE}")


class UserOut(msgspec.Struct):
    id: str
    name: str
    email: str
    created_at: datetime


@get("/api/users/{user_id:str}")
async def read_user(user_id: str) -> UserOut:
    async with engine.connect() as connection:
        row = (await connection.execute(read_one.where(users.c.id == user_id))).first()
    if row is None:
        raise NotFoundException(f"no user {user_id!r}")
    return UserOut(
        id=row.id,
        name=row.name,
        email=row.email,
        created_at=row.created_at.replace(tzinfo=UTC),  # SQLite keeps no offset; it is UTC
    )


async def close_engine() -> None:
    await engine.dispose()


app = Litestar([read_user], on_shutdown=[close_engine])
