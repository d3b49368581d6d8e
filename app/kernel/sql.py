"""A module's private SQL database: its own engine, its own schema, its own transactions.

Two access paths behind one interface (`Connection`):

- `sqlite:///…` runs the stdlib sqlite3 driver on the event loop. A statement costs tens
  of µs there, less than one hop to a worker thread, and a transaction never awaits
  anything else, so it holds SQLite's write lock for microseconds
  (docs/decisions/0015-blocking-work.md).
- `sqlite+aiosqlite:///…` and `postgresql+asyncpg://…` run SQLAlchemy's async engine.
  aiosqlite hops to a thread for every call (kept for comparison: bench/saga.py
  --sqlite-driver); asyncpg talks to a server that may be far away.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    contextmanager,
    nullcontext,
)
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from app.kernel.data_dir import make_private_database
from app.kernel.errors import StoreUnavailable
from app.kernel.migrations import SchemaState, SqlSchema
from app.kernel.outage import Outage
from app.kernel.tracing import tracing

tracer = trace.get_tracer("seams.stores")
log = logging.getLogger("app.stores")

# An OSError with one of these is the server not being there, not a statement that failed.
UNREACHABLE_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EPIPE,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ETIMEDOUT,
    }
)
# The drivers' own (by package, matched on the class and its bases): the server shuts down,
# crashed, is starting up, has no primary, or the connection is gone.
UNREACHABLE_DRIVER_ERRORS = {
    "asyncpg": frozenset(
        {
            "AdminShutdownError",
            "CrashShutdownError",
            "CannotConnectNowError",
            "ConnectionDoesNotExistError",
            "PostgresConnectionError",
        }
    ),
    "pymongo": frozenset({"AutoReconnect", "ConnectionFailure", "ServerSelectionTimeoutError"}),
}


def unreachable(error: BaseException) -> bool:
    """Whether `error` (or what caused it) says the database cannot be reached now: refused,
    reset, timed out, shutting down or starting up. A statement the database refused (a
    constraint, a syntax error, a lock timeout) is not: retrying it changes nothing."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        cause = pending.pop()
        if cause is None or id(cause) in seen:
            continue
        seen.add(id(cause))
        if isinstance(cause, sa.exc.DBAPIError) and cause.connection_invalidated:
            return True
        if isinstance(cause, (ConnectionError, TimeoutError)):
            return True
        if isinstance(cause, OSError) and cause.errno in UNREACHABLE_ERRNOS:
            return True
        if _driver_says_unreachable(type(cause)):
            return True
        orig = getattr(cause, "orig", None)
        pending += [cause.__cause__, cause.__context__]
        pending += [orig] if isinstance(orig, BaseException) else []
    return False


def _driver_says_unreachable(kind: type[BaseException]) -> bool:
    for base in kind.__mro__:
        names = UNREACHABLE_DRIVER_ERRORS.get(base.__module__.partition(".")[0])
        if names is not None and base.__name__ in names:
            return True
    return False


class Reachability:
    """Whether a store's server answers, as its store's callers see it: a failure to reach it
    becomes StoreUnavailable (503 with Retry-After; an event waits for it without spending
    attempts), said once when the server goes and once when it answers again, not at every
    request meanwhile. A duplicate key or any other error the server answered stays what it
    is. The SQL stores and the MongoDB orders documents use it alike."""

    def __init__(self, log: logging.Logger, display_url: str) -> None:
        self._log_url = display_url
        self._outage = Outage(log)

    @contextmanager
    def checked(self) -> Iterator[None]:
        try:
            yield
        except StoreUnavailable:
            raise
        except Exception as error:
            if not unreachable(error):
                raise
            self._outage.begin("the database %s is unreachable: %r", self._log_url, error)
            raise StoreUnavailable(
                "a database this needs is unreachable (it may be restarting): try again "
                "in a few seconds"
            ) from error
        self._outage.end("the database %s answers again", self._log_url, level=logging.WARNING)


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


class Executes(Protocol):
    def execute(self, sql: str, /) -> Any: ...


def tune_sqlite(connection: Executes, *, on_disk: bool) -> None:
    """Every SQLite store's pragmas: WAL on disk (readers never wait for the writer), NORMAL
    sync (safe with WAL: a power cut loses at most the last commits), a wait of up to
    5 s for another connection's write lock instead of an error, and secure delete: what is
    deleted is overwritten, not left in free pages (docs/decisions/0030-crypto-shredding.md)."""
    if on_disk:
        connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA secure_delete=ON")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA busy_timeout=5000")


# At a clean stop: every page back in the database file and the WAL emptied, so nothing
# deleted lingers in it (docs/decisions/0030-crypto-shredding.md).
CHECKPOINT = "PRAGMA wal_checkpoint(TRUNCATE)"

Rows = sa.CursorResult[*tuple[Any, ...]]
S = TypeVar("S", bound=sa.Executable)
T = TypeVar("T")


class Connection(Protocol):
    """What a store's code sees inside `transaction()` or `reading()`, whichever driver runs."""

    @property
    def dialect(self) -> sa.Dialect: ...

    async def execute(self, statement: sa.Executable, parameters: Any = None) -> Rows: ...

    async def run_sync(self, fn: Callable[[sa.Connection], T]) -> T:
        """Run synchronous SQLAlchemy code (DDL, inspection) on this connection."""
        ...


class OnLoopConnection:
    """A synchronous SQLAlchemy connection behind `Connection`'s awaitable interface: each
    execute runs at once, on the event loop, and never yields to another task."""

    __slots__ = ("_connection",)

    def __init__(self, connection: sa.Connection) -> None:
        self._connection = connection

    @property
    def dialect(self) -> sa.Dialect:
        return self._connection.dialect

    async def execute(self, statement: sa.Executable, parameters: Any = None) -> Rows:
        return self._connection.execute(statement, parameters)

    async def run_sync(self, fn: Callable[[sa.Connection], T]) -> T:
        return fn(self._connection)


def insert(connection: Connection, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that can say ON CONFLICT, in the connection's dialect (SQLite or PostgreSQL)."""
    return dialect_insert(connection.dialect.name, table)


def dialect_insert(dialect: str, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
    if dialect == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def prepared(build: Callable[[str], S]) -> Callable[[Connection], S]:
    """A statement built once per dialect, its values left as bind parameters.

    Building a statement and computing its cache key costs ~40 µs per call; executing a
    prebuilt one with a parameter dict skips both (bench/README.md, "Store access path").
    `build` gets the dialect name; values come at execute time:
    `await connection.execute(claim(connection), {"event_id": ...})`."""
    built: dict[str, S] = {}

    def statement(connection: Connection) -> S:
        dialect = connection.dialect.name
        found = built.get(dialect)
        if found is None:
            found = built[dialect] = build(dialect)
        return found

    return statement


CREATE_ATTEMPTS = 5


def _created_meanwhile(error: sa.exc.DBAPIError) -> bool:
    text = str(error.orig).lower()
    return "already exists" in text or "duplicate key" in text


class SqlDatabase:
    """One engine per module. SQLite gets one connection guarded by a lock, so concurrent
    requests queue instead of meeting 'database is locked'; PostgreSQL gets a pool."""

    def __init__(self, url: str, metadata: sa.MetaData, schema: SqlSchema | None = None) -> None:
        self.url = make_url(url)
        self.metadata = metadata
        # Its migrations (docs/decisions/0028-migrations.md); None: tables created as they
        # are declared (a store in tests, a module without migrations yet).
        self.schema = schema
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        self.on_loop = self.is_sqlite and self.url.get_driver_name() == "pysqlite"
        self.kind = f"sql:{self.url.get_backend_name()}"
        self.display_url = self.url.render_as_string(hide_password=True)
        self._lock: asyncio.Lock | None = asyncio.Lock() if self.is_sqlite else None
        self._reachability = Reachability(log, self.display_url)
        self._sync_engine: sa.Engine | None = None
        self._connection: sa.Connection | None = None  # the on-loop path's one connection
        self._engine: AsyncEngine | None = None
        if self.on_loop:
            self._sync_engine = self._create_sync_engine()
        else:
            self._engine = self._create_engine()

    @property
    def _in_memory(self) -> bool:
        return self.url.database in (None, "", ":memory:")

    @property
    def _file(self) -> Path | None:
        """The SQLite database's file; None for one in memory or on a server."""
        return Path(str(self.url.database)) if self.is_sqlite and not self._in_memory else None

    def _tune_sqlite(self, engine: sa.Engine) -> None:
        in_memory = self._in_memory

        @sa.event.listens_for(engine, "connect")
        def tune(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            tune_sqlite(cursor, on_disk=not in_memory)
            cursor.close()

    def _create_sync_engine(self) -> sa.Engine:
        # One connection for the store's life; the loop that uses it may run on another
        # thread than the one that built the store (test clients do), hence the flag.
        engine = sa.create_engine(
            self.url, poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
        self._tune_sqlite(engine)
        return engine

    def _create_engine(self) -> AsyncEngine:
        if not self.is_sqlite:
            return create_async_engine(self.url, pool_size=10, max_overflow=10, pool_pre_ping=True)
        options: dict[str, Any] = {"poolclass": StaticPool} if self._in_memory else {"pool_size": 1}
        engine = create_async_engine(self.url, connect_args={"check_same_thread": False}, **options)
        self._tune_sqlite(engine.sync_engine)
        return engine

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError(f"{self.display_url} runs on the event loop: it has no async engine")
        return self._engine

    def _guard(self) -> AbstractAsyncContextManager[Any]:
        return self._lock if self._lock is not None else nullcontext()

    def _on_loop_connection(self) -> sa.Connection:
        if self._connection is None:
            assert self._sync_engine is not None
            self._connection = self._sync_engine.connect()
        return self._connection

    async def open(self) -> None:
        if self.schema is not None:
            await self.migrate()  # makes the file private first
            return
        if self._file is not None:
            make_private_database(self._file)
        # Replicas of a module start together on one database: when another one created a
        # table between our check and our CREATE, check again (it exists now).
        for attempt in range(1, CREATE_ATTEMPTS + 1):
            try:
                await self._create_tables()
                return
            except sa.exc.DBAPIError as error:
                if attempt == CREATE_ATTEMPTS or not _created_meanwhile(error):
                    raise
                await asyncio.sleep(0.05 * attempt)

    @property
    def versioned(self) -> bool:
        return self.schema is not None

    async def schema_state(self) -> SchemaState:
        """Where the schema is against the code's head; an SQLite file not made yet is read
        as an empty database, and not made."""
        if self.schema is None:
            raise RuntimeError(f"{self.display_url} has no versioned schema")
        if self._file is not None and not self._file.exists():
            return self._without_file()
        async with self.reading() as connection:
            return await connection.run_sync(self.schema.state)

    def _without_file(self) -> SchemaState:
        engine = sa.create_engine("sqlite://")
        try:
            with engine.connect() as connection:
                assert self.schema is not None
                return self.schema.state(connection)
        finally:
            engine.dispose()

    async def migrate(self) -> SchemaState:
        """Bring the schema to the code's head in one transaction; SchemaRefused if the store
        is ahead of the code."""
        if self.schema is None:
            raise RuntimeError(f"{self.display_url} has no versioned schema")
        if self._file is not None:
            make_private_database(self._file)
        async with self.transaction() as connection:
            return await connection.run_sync(self.schema.upgrade)

    async def _create_tables(self) -> None:
        async with self.transaction() as connection:
            await connection.run_sync(self.metadata.create_all)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """One atomic write: commits when the block ends, rolls back if it raises."""
        with self._span("transaction"), self._reachability.checked():
            async with self._guard():
                if self.on_loop:
                    connection = self._on_loop_connection()
                    with connection.begin():
                        yield OnLoopConnection(connection)
                else:
                    async with self.engine.begin() as async_connection:
                        yield async_connection

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[Connection]:
        with self._span("read"), self._reachability.checked():
            async with self._guard():
                if self.on_loop:
                    connection = self._on_loop_connection()
                    try:
                        yield OnLoopConnection(connection)
                    finally:
                        connection.rollback()  # end the read transaction: drop the snapshot
                else:
                    async with self.engine.connect() as async_connection:
                        yield async_connection

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

    async def table_names(self) -> set[str]:
        """The tables this database holds (what a test checks against the module's schema)."""

        def names(connection: sa.Connection) -> set[str]:
            return set(sa.inspect(connection).get_table_names())

        async with self.reading() as connection:
            return await connection.run_sync(names)

    async def ping(self) -> None:
        async with self.reading() as connection:
            await connection.execute(sa.text("SELECT 1"))

    async def close(self) -> None:
        if self._sync_engine is not None:
            async with self._guard():
                if self._connection is not None:
                    if not self._in_memory:
                        self._connection.exec_driver_sql(CHECKPOINT)
                    self._connection.close()
                    self._connection = None
                self._sync_engine.dispose()
        if self._engine is not None:
            await self._engine.dispose()
