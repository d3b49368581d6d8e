"""A module's private SQL database: its own engine, its own schema, its own transactions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    nullcontext,
)
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from app.bus.tracing import tracing

tracer = trace.get_tracer("seams.stores")


class UtcDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no offset)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        return None if value is None else value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None or value.tzinfo is not None:
            return value
        return value.replace(tzinfo=UTC)


def insert(connection: AsyncConnection, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that can say ON CONFLICT, in the connection's dialect (SQLite or PostgreSQL)."""
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


class SqlDatabase:
    """One engine per module. SQLite gets one connection guarded by a lock, so concurrent
    requests queue instead of meeting 'database is locked'; PostgreSQL gets a pool."""

    def __init__(self, url: str, metadata: sa.MetaData) -> None:
        self.url = make_url(url)
        self.metadata = metadata
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        self.kind = f"sql:{self.url.get_backend_name()}"
        self.display_url = self.url.render_as_string(hide_password=True)
        self._lock: asyncio.Lock | None = asyncio.Lock() if self.is_sqlite else None
        self.engine: AsyncEngine = self._create_engine()

    def _create_engine(self) -> AsyncEngine:
        if not self.is_sqlite:
            return create_async_engine(self.url, pool_size=10, max_overflow=10, pool_pre_ping=True)
        in_memory = self.url.database in (None, "", ":memory:")
        options: dict[str, Any] = {"poolclass": StaticPool} if in_memory else {"pool_size": 1}
        engine = create_async_engine(self.url, connect_args={"check_same_thread": False}, **options)

        @sa.event.listens_for(engine.sync_engine, "connect")
        def tune(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            if not in_memory:
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.close()

        return engine

    def _guard(self) -> AbstractAsyncContextManager[Any]:
        return self._lock if self._lock is not None else nullcontext()

    async def open(self) -> None:
        if self.is_sqlite and self.url.database not in (None, "", ":memory:"):
            Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
        async with self.transaction() as connection:
            await connection.run_sync(self.metadata.create_all)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """One atomic write: commits when the block ends, rolls back if it raises."""
        with self._span("transaction"):
            async with self._guard(), self.engine.begin() as connection:
                yield connection

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncConnection]:
        with self._span("read"):
            async with self._guard(), self.engine.connect() as connection:
                yield connection

    def _span(self, operation: str) -> AbstractContextManager[Any]:
        if not tracing():
            return nullcontext()  # no tracer provider: skip the span altogether
        return tracer.start_as_current_span(
            f"{self.kind} {operation}",
            kind=SpanKind.CLIENT,
            attributes={
                "db.system": self.url.get_backend_name(),
                "db.name": str(self.url.database),
            },
        )

    async def fetch_page(
        self,
        statement: sa.Select[Any],
        id_column: sa.ColumnElement[str],
        *,
        after: str | None,
        limit: int,
        where: Iterable[tuple[sa.ColumnElement[Any], object]] = (),
    ) -> Sequence[sa.RowMapping]:
        """One cursor page: rows with an id after `after`, in id order; each (column, value)
        filter applies unless its value is None."""
        for column, value in where:
            if value is not None:
                statement = statement.where(column == value)
        if after is not None:
            statement = statement.where(id_column > after)
        async with self.reading() as connection:
            result = await connection.execute(statement.order_by(id_column).limit(limit))
            rows: Sequence[sa.RowMapping] = result.mappings().all()
            return rows

    async def ping(self) -> None:
        async with self.reading() as connection:
            await connection.execute(sa.text("SELECT 1"))

    async def close(self) -> None:
        await self.engine.dispose()
