"""A database that cannot be reached is a state the caller can wait out, not a bug: its
errors, however the driver wraps them, become StoreUnavailable (503 with Retry-After), said
once in the log when it goes and once when it is back; a statement the database refused is
not one of them (docs/decisions/0033-broker-cluster-and-restarts.md)."""

from __future__ import annotations

import errno
import logging

import asyncpg
import pymongo.errors
import pytest
import sqlalchemy as sa
from litestar import Litestar, get
from litestar.testing import TestClient

from app.gateway.errors import EXCEPTION_HANDLERS
from app.kernel.errors import StoreUnavailable
from app.kernel.sql import SqlDatabase, unreachable
from app.split.cluster import free_port

pytestmark = pytest.mark.anyio


def wrapped(error: BaseException) -> sa.exc.OperationalError:
    """As SQLAlchemy hands a driver's error on: the original in `orig` and as the cause."""
    outer = sa.exc.OperationalError("SELECT 1", {}, error)
    outer.__cause__ = error
    return outer


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed"),
        OSError(errno.EHOSTUNREACH, "No route to host"),
        TimeoutError(),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.AdminShutdownError("terminating connection"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
        pymongo.errors.ServerSelectionTimeoutError("no servers"),
        pymongo.errors.NotPrimaryError("not primary"),
    ],
    ids=repr,
)
def test_a_server_that_is_not_there_is_unreachable_however_wrapped(error: Exception) -> None:
    assert unreachable(error)
    assert unreachable(wrapped(error))
    try:
        try:
            raise error
        except Exception as inner:
            raise RuntimeError("while reading") from inner
    except RuntimeError as outer:
        assert unreachable(outer)


@pytest.mark.parametrize(
    "error",
    [
        sa.exc.IntegrityError("INSERT", {}, Exception("duplicate key")),
        asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout"),
        asyncpg.exceptions.UniqueViolationError("duplicate key"),
        OSError(errno.ENOSPC, "No space left on device"),
        ValueError("a bug"),
    ],
    ids=repr,
)
def test_a_statement_refused_is_not_unreachable(error: Exception) -> None:
    assert not unreachable(error)
    assert not unreachable(wrapped(error))


async def test_a_database_nobody_listens_for_is_store_unavailable_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nowhere"
    database = SqlDatabase(url, sa.MetaData())
    caplog.set_level(logging.WARNING, "app.stores")
    try:
        for _ in range(3):
            with pytest.raises(StoreUnavailable) as raised:
                async with database.transaction() as connection:
                    await connection.execute(sa.text("SELECT 1"))
            assert raised.value.status == 503
            assert raised.value.headers == {"Retry-After": "2"}
        with pytest.raises(StoreUnavailable):
            async with database.reading() as connection:
                await connection.execute(sa.text("SELECT 1"))
    finally:
        await database.engine.dispose()
    said = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(said) == 1 and "nowhere" in said[0]


def test_a_database_back_is_said_once_at_warning(caplog: pytest.LogCaptureFixture) -> None:
    database = SqlDatabase("sqlite:///:memory:", sa.MetaData())
    caplog.set_level(logging.DEBUG, "app.stores")
    for _ in range(3):
        with pytest.raises(StoreUnavailable), database._reachability.checked():
            raise wrapped(ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed"))
    for _ in range(2):
        with database._reachability.checked():
            pass

    said = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "app.stores"]
    assert [level for level, _ in said] == [logging.WARNING, logging.WARNING]
    assert f"{database.display_url} is unreachable" in said[0][1]
    assert said[1][1] == f"the database {database.display_url} answers again"


async def test_a_statement_error_stays_what_it_is() -> None:
    database = SqlDatabase("sqlite:///:memory:", sa.MetaData())
    with pytest.raises(sa.exc.OperationalError):
        async with database.transaction() as connection:
            await connection.execute(sa.text("SELECT * FROM no_such_table"))


def test_an_unreachable_store_outside_a_transaction_is_a_503_problem_not_a_500() -> None:
    @get("/reach")
    async def reach() -> None:
        raise wrapped(ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed"))

    app = Litestar([reach], exception_handlers=EXCEPTION_HANDLERS)
    with TestClient(app) as client:
        answer = client.get("/reach")

    assert answer.status_code == 503
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.headers["retry-after"] == "2"
    assert "unreachable" in answer.json()["detail"]
