"""Every store's schema at a known revision, moved forward by migrations, never by luck
(docs/decisions/0028-migrations.md).

Two kinds of schema version, one answer to "where is this store, where is the code":

- A SQL module's database: Alembic, one migration environment per module
  (`app/modules/<module>/migrations/`, run programmatically: no alembic.ini) and one version
  table per module, `alembic_version_<module>`. Autogenerate and the comparison see only the
  tables of the module's own metadata, so two modules may share one PostgreSQL database.
- A store without SQL models (the orders documents, the bus's own store): a list of steps,
  step N taking the store from version N to N+1 (step 0 creates version 1 from nothing),
  and the version kept in the store itself (`schema_version`: one row per store).

A store is in one of these states (`SchemaState`): empty (created at the code's head in
every mode: an install loses nothing), behind (development applies the migrations,
production refuses to start naming the module, its revision, the head and the command),
at the head, or ahead / unknown to this code (refused in every mode: an older release must
not write a newer schema).
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from importlib.util import find_spec
from pathlib import Path
from types import ModuleType
from typing import Any, Generic, Literal, Protocol, TypeVar, runtime_checkable

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

MIGRATE_COMMAND = "python -m app migrate"
VERSION_TABLE_PREFIX = "alembic_version_"
UNVERSIONED = "unversioned"  # tables of a release before migrations, no version recorded
STEPS_TABLE = "schema_version"
# Alembic's post-write hook: `python -m ruff format` on a revision it has just written.
RUFF_FORMAT_HOOK = {
    "hooks": "ruff",
    "ruff.type": "module",
    "ruff.module": "ruff",
    "ruff.options": "format REVISION_SCRIPT_FILENAME",
}

Env = Literal["development", "production", "test"]
# What env.py is handed: alembic.context, a module standing for the running EnvironmentContext.
Environment = EnvironmentContext | ModuleType


@dataclass(frozen=True)
class SchemaState:
    """Where one store's schema is, against the code's head."""

    store: str  # the module (or "bus") whose store it is
    current: str | None  # None: an empty store; UNVERSIONED; else a revision
    head: str
    known: bool  # the current revision is one this code has (an empty store is known)

    @property
    def empty(self) -> bool:
        return self.current is None

    @property
    def at_head(self) -> bool:
        return self.current == self.head

    @property
    def ahead(self) -> bool:
        return not self.known

    @property
    def pending(self) -> bool:
        """Migrations to apply to a store that holds data (an empty one is just created)."""
        return self.known and not self.empty and not self.at_head

    def describe(self) -> str:
        """One line for `python -m app migrate` and the start-up log."""
        if self.ahead:
            return f"{self.store}: at {self.current}, newer than this code (head {self.head})"
        if self.empty:
            return f"{self.store}: empty, will be created at {self.head}"
        if self.at_head:
            return f"{self.store}: at {self.head} (head)"
        return f"{self.store}: at {self.current}, pending up to {self.head}"


class SchemaRefused(Exception):
    """A store this process must not open: behind in production, or ahead anywhere."""


def ahead_message(state: SchemaState) -> str:
    return (
        f"the {state.store} store is at revision {state.current}, which this code does not "
        f"know (its head is {state.head}): a newer release wrote it. Run that release, or "
        "restore a backup taken before the upgrade"
    )


def behind_message(state: SchemaState) -> str:
    return (
        f"the {state.store} store is at revision {state.current} and the code's head is "
        f"{state.head}: APP_ENV=production applies no migration on start. Stop the server, "
        f"take a backup (python -m app backup DIR), run `{MIGRATE_COMMAND}` and start again"
    )


def refusal(state: SchemaState, env: Env) -> str | None:
    """Why a store in this state may not be opened in this mode, or None."""
    if state.ahead:
        return ahead_message(state)
    if state.pending and env == "production":
        return behind_message(state)
    return None


@runtime_checkable
class Versioned(Protocol):
    """A store whose schema has a version: what start-up and `migrate` ask of it."""

    @property
    def versioned(self) -> bool:
        """False for a store of this kind that has no versions (a SQL store in a test)."""
        ...

    async def schema_state(self) -> SchemaState: ...

    async def migrate(self) -> SchemaState:
        """Bring the store to the code's head (SchemaRefused if it is ahead); its new state."""
        ...


def _versioned(stores: Iterable[object]) -> list[Versioned]:
    return [store for store in stores if isinstance(store, Versioned) and store.versioned]


async def check_schemas(stores: Iterable[object], env: Env) -> list[SchemaState]:
    """Before any store opens: refuse (SchemaRefused, every store's reason) what this mode
    may not open; the states of the versioned stores otherwise."""
    states = [await store.schema_state() for store in _versioned(stores)]
    reasons = [reason for state in states if (reason := refusal(state, env)) is not None]
    if reasons:
        raise SchemaRefused("; ".join(reasons))
    return states


@dataclass(frozen=True)
class MigrationReport:
    """What `python -m app migrate` did or found, store by store."""

    before: list[SchemaState]
    after: list[SchemaState]

    @property
    def lines(self) -> list[str]:
        return [_moved(old, new) for old, new in zip(self.before, self.after, strict=True)]

    @property
    def pending(self) -> bool:
        return any(state.pending or state.ahead for state in self.after)


def _moved(before: SchemaState, after: SchemaState) -> str:
    if before.current == after.current or after.ahead:
        return after.describe()
    return f"{after.store}: {before.current or 'empty'} -> {after.current} (head)"


async def migrate_stores(stores: Iterable[object], *, check: bool) -> MigrationReport:
    """Every versioned store brought to the head, or (check) only read; a store ahead of the
    code is reported, never touched."""
    versioned = _versioned(stores)
    before = [await store.schema_state() for store in versioned]
    after = [
        state if check or state.ahead else await store.migrate()
        for store, state in zip(versioned, before, strict=True)
    ]
    return MigrationReport(before, after)


# --- SQL: Alembic, one environment and one version table per module -------------------------


def lock_for_migration(connection: sa.Connection, store: str) -> None:
    """Hold the database's write lock for the whole migration, inside its transaction, so
    replicas starting together migrate one after another (the second finds the head).
    SQLite: BEGIN IMMEDIATE (DDL is transactional there once a transaction is open);
    PostgreSQL: an advisory lock keyed by the module, released at commit."""
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    elif connection.dialect.name == "postgresql":
        key = zlib.crc32(f"seams-migrations-{store}".encode())
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


class SqlMigrations:
    """A module's Alembic environment: its scripts, its version table, its metadata."""

    def __init__(self, module: str, script_location: Path, metadata: sa.MetaData) -> None:
        self.module = module
        self.script_location = script_location
        self.metadata = metadata
        self.version_table = f"{VERSION_TABLE_PREFIX}{module}"

    def config(self, connection: sa.Connection | None = None) -> Config:
        """The Alembic configuration, built in code; env.py reads the rest from it."""
        config = Config()
        config.set_main_option("script_location", str(self.script_location))
        config.attributes["migrations"] = self
        config.attributes["connection"] = connection
        return config

    @cached_property
    def scripts(self) -> ScriptDirectory:
        return ScriptDirectory.from_config(self.config())

    @property
    def head(self) -> str:
        head = self.scripts.get_current_head()
        if head is None:
            raise RuntimeError(f"{self.script_location} holds no revision")
        return head

    def owns(self, name: str | None, type_: str) -> bool:
        """Alembic's include_name: only this module's tables (and their indexes and columns,
        which Alembic asks about under tables it kept). The other modules' tables and
        version tables in a shared database are not this module's business."""
        if type_ == "table":
            return name in self.metadata.tables
        return True

    def configure(self, context: Environment, connection: sa.Connection) -> None:
        """What every module's env.py runs: the shared options of an environment."""
        context.configure(
            connection=connection,
            target_metadata=self.metadata,
            version_table=self.version_table,
            include_name=lambda name, type_, _parents: self.owns(name, type_),
            render_as_batch=True,  # SQLite alters a table by copying it
            compare_type=True,
            compare_server_default=True,
        )
        with context.begin_transaction():
            context.run_migrations()

    def state(self, connection: sa.Connection) -> SchemaState:
        current = self._current(connection)
        known = current in (None, UNVERSIONED) or self._knows(current)
        return SchemaState(self.module, current, self.head, known)

    def _current(self, connection: sa.Connection) -> str | None:
        context = MigrationContext.configure(connection, opts={"version_table": self.version_table})
        revision = context.get_current_revision()
        if revision is not None:
            return revision
        existing = set(sa.inspect(connection).get_table_names())
        return UNVERSIONED if existing & set(self.metadata.tables) else None

    def _knows(self, revision: str) -> bool:
        try:
            return self.scripts.get_revision(revision) is not None
        except Exception:  # alembic raises several kinds for a revision it cannot resolve
            return False

    def upgrade(self, connection: sa.Connection) -> SchemaState:
        """To the head, in the caller's transaction, holding the lock; refuses a store ahead.
        A store from the release before migrations (UNVERSIONED) runs revision 1, which
        creates only the tables it lacks, and continues from there."""
        lock_for_migration(connection, self.module)
        state = self.state(connection)
        if state.ahead:
            raise SchemaRefused(ahead_message(state))
        if not state.at_head:
            command.upgrade(self.config(connection), "head")
        return self.state(connection)

    def differences(self, connection: sa.Connection) -> list[Any]:
        """What autogenerate would write now: empty when the revisions make the models."""
        context = MigrationContext.configure(
            connection,
            opts={
                "version_table": self.version_table,
                "include_name": lambda name, type_, _parents: self.owns(name, type_),
                "compare_type": True,
                "compare_server_default": True,
                "target_metadata": self.metadata,
            },
        )
        return list(compare_metadata(context, self.metadata))

    def new_revision(self, message: str) -> Path | None:
        """Autogenerate the next revision (numbered after the head) against a scratch SQLite
        database at the head; its file, or None when the models match the head."""
        engine = sa.create_engine("sqlite://")
        try:
            with engine.begin() as connection:
                self.upgrade(connection)
                if not self.differences(connection):
                    return None
                return self._write_revision(connection, message)
        finally:
            engine.dispose()

    def _write_revision(self, connection: sa.Connection, message: str) -> Path:
        head = self.head
        number = f"{int(head) + 1:04d}" if head.isdigit() else None
        config = self.config(connection)
        if find_spec("ruff") is not None:  # a development install: the file as CI wants it
            for option, value in RUFF_FORMAT_HOOK.items():
                config.set_section_option("post_write_hooks", option, value)
        script = command.revision(config, message=message, autogenerate=True, rev_id=number)
        if script is None or isinstance(script, list):
            raise RuntimeError("alembic wrote no single revision")
        return Path(script.path)


_found: dict[tuple[str, int], SqlMigrations | None] = {}  # its scripts are read once


def migrations_beside(store_class: type, metadata: sa.MetaData) -> SqlMigrations | None:
    """A module's migrations by convention: the `migrations/` folder of the package its store
    class lives in (app.modules.users.store.UsersStore: app/modules/users/migrations/,
    module "users"); None where there is none (a store defined in a test)."""
    key = (store_class.__module__, id(metadata))
    if key not in _found:
        _found[key] = _find_beside(store_class.__module__.rpartition(".")[0], metadata)
    return _found[key]


def _find_beside(package: str, metadata: sa.MetaData) -> SqlMigrations | None:
    file = getattr(sys.modules.get(package), "__file__", None)
    if file is None:
        return None
    folder = Path(file).parent / "migrations"
    if not (folder / "env.py").is_file():
        return None
    return SqlMigrations(package.rpartition(".")[2], folder, metadata)


def run_environment(context: Environment) -> None:
    """The body of every module's env.py: the connection and the module's SqlMigrations come
    through the configuration (`SqlMigrations.config`); offline SQL is not offered."""
    migrations: SqlMigrations = context.config.attributes["migrations"]
    connection: sa.Connection | None = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(f"run the migrations through `{MIGRATE_COMMAND}`")
    migrations.configure(context, connection)


def table_exists(connection: sa.Connection, name: str) -> bool:
    """For revision 1: a store from the release before migrations may hold the table."""
    return sa.inspect(connection).has_table(name)


# --- Stores without SQL models: a list of upgrade steps -------------------------------------

C = TypeVar("C")


class VersionRecord(Protocol):
    """Where a store keeps its version (its `schema_version` row), read and written in the
    migration's own transaction."""

    def read(self) -> int | None: ...

    def write(self, version: int) -> None: ...

    def holds_data(self) -> bool:
        """Whether the store has tables from a release that recorded no version."""
        ...


def steps_state(store: str, version: int | None, head: int, unversioned_data: bool) -> SchemaState:
    """Where a store of upgrade steps is: its recorded version; with none, UNVERSIONED (the
    baseline, version 1) if it holds data from the release before versions, else empty."""
    if version is not None:
        return SchemaState(store, str(version), str(head), known=1 <= version <= head)
    return SchemaState(store, UNVERSIONED if unversioned_data else None, str(head), known=True)


@dataclass(frozen=True)
class UpgradeSteps(Generic[C]):
    """An empty store is created at the head by `create` (the code's current schema) and
    stamped; a store holding data runs `steps[i]` (version i+1 to i+2) from its version on.
    A store from the release before versions is version 1, the baseline."""

    store: str
    create: Callable[[C], None]
    steps: Sequence[Callable[[C], None]] = ()

    @property
    def head(self) -> int:
        return len(self.steps) + 1

    def state(self, record: VersionRecord) -> SchemaState:
        version = record.read()
        return steps_state(self.store, version, self.head, version is None and record.holds_data())

    def upgrade(self, connection: C, record: VersionRecord) -> SchemaState:
        """To the head in the caller's transaction; SchemaRefused for a store ahead."""
        state = self.state(record)
        if state.ahead:
            raise SchemaRefused(ahead_message(state))
        if state.empty:
            self.create(connection)
        else:
            for step in self.steps[(record.read() or 1) - 1 :]:
                step(connection)
        if not state.at_head:
            record.write(self.head)
        return self.state(record)


RunSql = Callable[[str, dict[str, Any]], list[tuple[Any, ...]]]


class SqlVersionRecord:
    """A store's row in `schema_version`, through any runner of SQL text with :named
    parameters (sqlite3 and SQLAlchemy both take them)."""

    def __init__(
        self, run: RunSql, store: str, data_tables: Sequence[str], tables: Callable[[], set[str]]
    ) -> None:
        self._run = run
        self._store = store
        self._data_tables = data_tables
        self._tables = tables

    def read(self) -> int | None:
        if STEPS_TABLE not in self._tables():
            return None
        rows = self._run(
            f"SELECT version FROM {STEPS_TABLE} WHERE store = :store", {"store": self._store}
        )
        return None if not rows else int(rows[0][0])

    def write(self, version: int) -> None:
        self._run(
            f"CREATE TABLE IF NOT EXISTS {STEPS_TABLE} "
            "(store VARCHAR(100) PRIMARY KEY, version INTEGER NOT NULL)",
            {},
        )
        self._run(f"DELETE FROM {STEPS_TABLE} WHERE store = :store", {"store": self._store})
        self._run(
            f"INSERT INTO {STEPS_TABLE} (store, version) VALUES (:store, :version)",
            {"store": self._store, "version": version},
        )

    def holds_data(self) -> bool:
        return bool(set(self._data_tables) & self._tables())


class SqlSteps:
    """UpgradeSteps over a SQLAlchemy connection: the schema of a SqlDatabase without Alembic
    (the bus's own store)."""

    def __init__(
        self, store: str, metadata: sa.MetaData, steps: Sequence[Callable[[sa.Connection], None]]
    ) -> None:
        self.store = store
        self.metadata = metadata
        self.steps = UpgradeSteps[sa.Connection](store, metadata.create_all, steps)

    def _record(self, connection: sa.Connection) -> SqlVersionRecord:
        def run(sql: str, parameters: dict[str, Any]) -> list[tuple[Any, ...]]:
            result = connection.execute(sa.text(sql), parameters)
            return [tuple(row) for row in result] if result.returns_rows else []

        return SqlVersionRecord(
            run,
            self.store,
            list(self.metadata.tables),
            lambda: set(sa.inspect(connection).get_table_names()),
        )

    def state(self, connection: sa.Connection) -> SchemaState:
        return self.steps.state(self._record(connection))

    def upgrade(self, connection: sa.Connection) -> SchemaState:
        lock_for_migration(connection, self.store)
        return self.steps.upgrade(connection, self._record(connection))


class SqlSchema(Protocol):
    """What a SqlDatabase asks of its schema, Alembic's or a list of steps."""

    def state(self, connection: sa.Connection) -> SchemaState: ...

    def upgrade(self, connection: sa.Connection) -> SchemaState: ...
