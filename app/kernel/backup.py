"""`python -m app backup DIR`: a consistent copy of every store, taken while the system runs
(docs/decisions/0029-backups.md).

Each copy is consistent in itself (one read snapshot):
- SQLite: the online backup API (sqlite3 `Connection.backup`) from a connection holding one
  read snapshot (WAL: writers go on meanwhile). Every SQLite store of the data dir is copied
  as of ONE instant: the backup takes every store's write lock (BEGIN IMMEDIATE, in name
  order), opens a read snapshot of each, and lets the locks go at once (a writer waits a few
  milliseconds), then copies each snapshot at leisure. The copies are then a state the whole
  system was in, as after a crash at that instant, which outbox and inbox already survive;
- PostgreSQL: `pg_dump`, which reads one snapshot (a repeatable-read transaction), as plain
  SQL for `psql` to restore;
- MongoDB: not done here; `mongodump --uri …` is named.
Stores on servers are copied one after the other: not one instant across modules. That is
safe because no module's data points into another's store without an event behind it,
events are kept in the producer's outbox and claimed in the consumer's inbox, and `restore`
marks every event the SQL outboxes still keep (APP_RETENTION_SECONDS) undelivered: the
relays send them again, and a consumer whose copy handled one already skips it. A store whose
outbox forgets an event once relayed (the orders documents) is copied first, and the others
`settle_seconds` later, so that what it relayed before its copy has reached its consumers'
stores before theirs are copied.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import make_url

from app.kernel.data_dir import make_private_file, prepare_data_dir

MANIFEST = "backup.json"
BUSY_TIMEOUT_MS = 5_000
SETTLE_SECONDS = 0.25  # well above an event's hop from a relay to its consumer's commit (ms)
LOCK_TIMEOUT_SECONDS = 1.0  # for each write lock of the instant; then all let go, tried again
LOCK_TRIES = 10


class BackupError(Exception):
    """The backup cannot start: the target is not a new, empty directory."""


@dataclass(frozen=True)
class Copy:
    """What became of one store."""

    store: str
    source: str  # its URL, without a password
    method: str  # sqlite-backup, pg_dump, none
    file: str | None  # within the backup directory
    complete: bool
    note: str = ""

    def describe(self) -> str:
        if self.complete:
            return f"{self.store}: {self.method} of {self.source} -> {self.file} {self.note}"
        return f"{self.store}: NOT COPIED ({self.source}): {self.note}"


def back_up(
    stages: Sequence[Mapping[str, str]],
    directory: Path,
    files: Mapping[str, Path] | None = None,
    settle_seconds: float = SETTLE_SECONDS,
) -> list[Copy]:
    """Copy each stage's stores (name -> URL), waiting `settle_seconds` between stages, and
    each extra file (name -> path, e.g. the secret key) into `directory`, which must be new
    or empty; write the manifest last."""
    _new_private_directory(directory)
    on_file = {
        store: path
        for stage in stages
        for store, url in stage.items()
        if (path := _sqlite_file(url)) is not None
    }
    copies = _copy_sqlite_at_one_instant(on_file, stages, directory)
    servers = [{s: url for s, url in stage.items() if s not in on_file} for stage in stages]
    for number, stage in enumerate(stage for stage in servers if stage):
        if number or copies:
            time.sleep(settle_seconds)
        copies += [copy_store(store, url, directory) for store, url in stage.items()]
    copies += [_copy_file(name, path, directory) for name, path in (files or {}).items()]
    manifest = directory / MANIFEST
    make_private_file(manifest)
    manifest.write_text(
        json.dumps(
            {
                "taken_at": datetime.now(UTC).isoformat(),
                "copies": [asdict(copy) for copy in copies],
                "restore": "docs/decisions/0029-backups.md (README: Backups)",
            },
            indent=2,
        )
        + "\n"
    )
    return copies


def _new_private_directory(directory: Path) -> None:
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise BackupError(f"{directory} exists and is not an empty directory: name a new one")
    prepare_data_dir(directory)  # 0700: the copies hold what the stores hold


def copy_store(store: str, url: str, directory: Path) -> Copy:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    shown = parsed.render_as_string(hide_password=True)
    if backend == "sqlite":
        return _copy_sqlite(store, shown, parsed.database, directory)
    if backend == "postgresql":
        return _dump_postgresql(store, url, shown, directory)
    if backend.startswith("mongo"):
        return Copy(
            store,
            shown,
            "none",
            None,
            complete=False,
            note=f"a MongoDB store: take it with `mongodump --uri <its URL> --out {directory}`",
        )
    return Copy(store, shown, "none", None, complete=False, note=f"no way to copy {backend}")


def _copy_sqlite(store: str, shown: str, database: str | None, directory: Path) -> Copy:
    if database in (None, "", ":memory:"):
        return Copy(store, shown, "none", None, complete=False, note="in memory: nothing on disk")
    source_path = Path(str(database))
    if not source_path.exists():
        return Copy(store, shown, "none", None, complete=True, note="(no file yet: nothing held)")
    source = sqlite3.connect(source_path, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        return _copy_snapshot(store, shown, source, directory)
    finally:
        source.close()


def _copy_snapshot(store: str, shown: str, source: sqlite3.Connection, directory: Path) -> Copy:
    """All pages in one step, from the source connection's read snapshot (its open read
    transaction if it holds one, else one taken for the step)."""
    target = directory / f"{store}.db"  # the name it has in a data dir
    make_private_file(target)
    copy = sqlite3.connect(target)
    try:
        source.backup(copy)
        copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
    finally:
        copy.close()
    return Copy(store, shown, "sqlite-backup", target.name, complete=True, note=_size(target))


def _sqlite_file(url: str) -> Path | None:
    """The file of an SQLite store that has one on disk; None for anything else."""
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or database in (None, "", ":memory:"):
        return None
    path = Path(str(database))
    return path if path.exists() else None


def _copy_sqlite_at_one_instant(
    files: Mapping[str, Path], stages: Sequence[Mapping[str, str]], directory: Path
) -> list[Copy]:
    """Every SQLite store as of one instant: a read snapshot of each opened while every
    store's write lock is held, so no commit falls between two of them; then copied."""
    if not files:
        return []
    shown = {
        store: make_url(url).render_as_string(hide_password=True)
        for stage in stages
        for store, url in stage.items()
    }
    snapshots = _snapshots_at_one_instant(files)
    try:
        return [
            _copy_snapshot(store, shown[store], snapshots[store], directory)
            for store in files  # in the stages' order
        ]
    finally:
        for connection in snapshots.values():
            connection.close()


def _snapshots_at_one_instant(files: Mapping[str, Path]) -> dict[str, sqlite3.Connection]:
    """Take every write lock (in name order, a short wait each), open a read snapshot of each
    store, let the locks go. A lock not had in time (a writer holds it, or another process
    takes them in another order) lets every lock go and tries again."""
    for _ in range(LOCK_TRIES):
        locks: list[sqlite3.Connection] = []
        try:
            for store in sorted(files):
                lock = sqlite3.connect(
                    files[store], timeout=LOCK_TIMEOUT_SECONDS, isolation_level=None
                )
                locks.append(lock)
                lock.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            _let_go(locks)
            continue
        try:
            return {store: _read_snapshot(path) for store, path in files.items()}
        finally:
            _let_go(locks)
    raise BackupError(
        f"could not hold every store's write lock at once in {LOCK_TRIES} tries: "
        "a writer keeps one; try again"
    )


def _read_snapshot(path: Path) -> sqlite3.Connection:
    reader = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the snapshot starts here
    return reader


def _let_go(locks: list[sqlite3.Connection]) -> None:
    for lock in locks:
        if lock.in_transaction:
            lock.execute("ROLLBACK")
        lock.close()


def _dump_postgresql(store: str, url: str, shown: str, directory: Path) -> Copy:
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        return Copy(
            store,
            shown,
            "pg_dump",
            None,
            complete=False,
            note="pg_dump is not installed (apt install postgresql-client): skipped",
        )
    parsed = make_url(url)
    target = directory / f"{store}.sql"
    make_private_file(target)
    dsn = parsed.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    environment = {**os.environ}
    if parsed.password:  # never on the command line, where `ps` shows it
        environment["PGPASSWORD"] = str(parsed.password)
    finished = subprocess.run(
        [pg_dump, "--format=plain", "--no-owner", "--file", str(target), dsn],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    if finished.returncode != 0:
        return Copy(
            store, shown, "pg_dump", None, complete=False, note=finished.stderr.strip()[-500:]
        )
    return Copy(store, shown, "pg_dump", target.name, complete=True, note=_size(target))


def _copy_file(name: str, path: Path, directory: Path) -> Copy:
    if not path.exists():
        return Copy(name, str(path), "none", None, complete=True, note="(no file: nothing held)")
    target = directory / path.name
    make_private_file(target)
    target.write_bytes(path.read_bytes())
    return Copy(name, str(path), "copy", target.name, complete=True, note=_size(target))


def _size(path: Path) -> str:
    return f"({path.stat().st_size / 1024:.0f} KiB)"


# --- restore ---------------------------------------------------------------------------------

REDELIVER = "UPDATE outbox SET delivered_at = NULL WHERE delivered_at IS NOT NULL"


@dataclass(frozen=True)
class Restored:
    store: str
    file: str
    redelivered: int  # outbox rows marked undelivered, for the relay to send again

    def describe(self) -> str:
        again = f", {self.redelivered} events to send again" if self.redelivered else ""
        return f"{self.store}: {self.file}{again}"


def restore(backup: Path, data_dir: Path) -> list[Restored]:
    """The SQLite copies and files of a backup into an empty data dir, every event their
    outboxes keep marked undelivered (inboxes make the second delivery a no-op)."""
    manifest = backup / MANIFEST
    if not manifest.is_file():
        raise BackupError(f"{backup} holds no {MANIFEST}: not a backup this command wrote")
    if data_dir.exists() and any(p.name != ".lock" for p in data_dir.iterdir()):
        raise BackupError(f"{data_dir} is not empty: restore into a new data dir")
    prepare_data_dir(data_dir)
    copies = [Copy(**copy) for copy in json.loads(manifest.read_text())["copies"]]
    restored = []
    for copy in copies:
        if copy.file is None or copy.method not in ("sqlite-backup", "copy"):
            continue
        target = data_dir / copy.file
        make_private_file(target)
        target.write_bytes((backup / copy.file).read_bytes())
        redelivered = _mark_undelivered(target) if copy.method == "sqlite-backup" else 0
        restored.append(Restored(copy.store, copy.file, redelivered))
    return restored


def _mark_undelivered(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        if "outbox" not in tables:
            return 0
        with db:
            return db.execute(REDELIVER).rowcount
    finally:
        db.close()
