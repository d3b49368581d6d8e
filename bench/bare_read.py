"""The bare read of docs/decisions/0016-benchmarks.md: the "physical limit" for GET /api/users/{id}.

A Litestar app with no middleware, no dependencies, no exception handlers, reading the
same row from the same store with the same driver as Seams' users module: SQLAlchemy
synchronous Core over the stdlib sqlite3 driver, run on the event loop, one connection
for the process (app/kernel/sql.py, `sqlite:///`), the same four columns Seams answers
with, selected by a statement built once with the id bound at execute time, out as a
msgspec Struct. Served by bench/gateway_read.py with

    BARE_USERS_DB=/path/to/users.db uvicorn bare_read:app --app-dir bench \
        --loop uvloop --http httptools --no-access-log --log-level warning

or, under granian as `APP_SERVER=granian python -m app` runs Seams (granian's embedded
server on uvloop, in this one process),

    BARE_USERS_DB=/path/to/users.db python bench/bare_read.py --port 8001

Nothing here imports `app`: the bare side must not share Seams' code, only its data.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

import msgspec
import sqlalchemy as sa
from litestar import Litestar, get
from litestar.exceptions import NotFoundException
from sqlalchemy.pool import StaticPool

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
read_one = sa.select(users.c.id, users.c.name, users.c.email, users.c.created_at).where(
    users.c.id == sa.bindparam("user_id")
)

# One connection, as Seams' SQLite stores keep; sync code on the loop never interleaves.
engine = sa.create_engine(
    f"sqlite:///{DATABASE}", poolclass=StaticPool, connect_args={"check_same_thread": False}
)
connection = engine.connect()


class UserOut(msgspec.Struct):
    id: str
    name: str
    email: str
    created_at: datetime


@get("/api/users/{user_id:str}")
async def read_user(user_id: str) -> UserOut:
    try:
        row = connection.execute(read_one, {"user_id": user_id}).first()
    finally:
        connection.rollback()  # end the read transaction, as Seams' store does
    if row is None:
        raise NotFoundException(f"no user {user_id!r}")
    return UserOut(
        id=row.id,
        name=row.name,
        email=row.email,
        created_at=row.created_at.replace(tzinfo=UTC),  # SQLite keeps no offset; it is UTC
    )


def close_engine() -> None:
    connection.close()
    engine.dispose()


app = Litestar([read_user], on_shutdown=[close_engine])


def serve_with_granian(host: str, port: int) -> None:
    import asyncio
    import signal

    import uvloop
    from granian.constants import Interfaces
    from granian.log import LogLevels
    from granian.server.embed import Server

    server = Server(
        app,
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        log_level=LogLevels.warning,
        log_access=False,
        backlog=1024,
    )

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for stop_signal in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(stop_signal, server.stop)
        await server.serve()

    uvloop.run(run())


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="the bare read under granian (embedded)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    arguments = parser.parse_args()
    serve_with_granian(arguments.host, arguments.port)
