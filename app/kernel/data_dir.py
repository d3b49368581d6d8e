"""The data dir: private to the user who runs the server, and held by one server at a time.

The stores in it hold password hashes, the secret key signs tokens: the data dir is made
0700 and every store file 0600 whatever the umask, and an existing dir or file open to
other users is tightened with a warning (SQLite gives its -wal and -shm files the mode of
the database file).

`DataDirLock` keeps a second server off a data dir in use: an OS file lock (flock) on
`<data dir>/.lock`, which the kernel releases when its process dies, so a SIGKILL never
leaves a stale lock behind. A monolith or create-admin holds it exclusively; module
processes of the split mode share it (replicas on one host share a data dir), which keeps
a monolith out while they run and them out while a monolith runs.
"""

from __future__ import annotations

import fcntl
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

log = logging.getLogger("app")

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
OTHERS = 0o077  # the group's and other users' permission bits
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")
LOCK_FILE = ".lock"


def make_private_dir(path: Path) -> None:
    """Create the directory (and its missing parents) with mode 0700 if it is missing."""
    if path.is_dir():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=PRIVATE_DIR)
    except FileExistsError:  # another process of the split made it meanwhile
        return
    path.chmod(PRIVATE_DIR)  # mkdir's mode went through the umask


def prepare_data_dir(path: Path) -> None:
    """The data dir, 0700: created so, or tightened (with a warning) if it lets others in."""
    make_private_dir(path)
    _tighten(path)


def make_private_file(path: Path) -> None:
    """A file only its owner may read, before anything writes to it: created empty with mode
    0600, or tightened (with a warning) if it exists open to others."""
    make_private_dir(path.parent)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    except FileExistsError:
        _tighten(path)
    else:
        os.fchmod(descriptor, PRIVATE_FILE)  # the mode given to open went through the umask
        os.close(descriptor)


def make_private_database(path: Path) -> None:
    """An SQLite database file, 0600 before SQLite opens it (an empty file is an empty
    database); the side files an earlier run left (-wal, -shm, -journal) are tightened too,
    since SQLite keeps an existing file's mode."""
    make_private_file(path)
    for side in SQLITE_SIDE_FILES:
        _tighten(path.with_name(path.name + side))


def _tighten(path: Path) -> None:
    """Take the group's and other users' permissions off an existing file or directory."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    mode = stat.S_IMODE(info.st_mode)
    if not mode & OTHERS:
        return
    # A shared directory (sticky, like /tmp) or another user's file is not ours to change.
    if info.st_mode & stat.S_ISVTX or info.st_uid != os.geteuid():
        log.warning("%s is open to other users (mode %o) and not ours to tighten", path, mode)
        return
    path.chmod(mode & ~OTHERS)
    log.warning("%s was open to other users (mode %o): now %o", path, mode, mode & ~OTHERS)


@dataclass(frozen=True)
class Holder:
    pid: int
    role: str  # the command it runs, e.g. "python -m app"

    def __str__(self) -> str:
        return f"pid {self.pid} ({self.role})"


class DataDirInUse(Exception):
    """Another process holds the data dir."""

    def __init__(self, data_dir: Path, holders: list[Holder]) -> None:
        self.data_dir = data_dir
        self.holders = holders
        who = ", ".join(str(holder) for holder in holders) or "another process"
        super().__init__(f"the data dir {data_dir} is in use by {who}")


class DataDirLock:
    """`<data dir>/.lock`, held from `acquire()` until `release()` or the process's death.

    The file lists its holders, one "pid role" line each: an exclusive holder rewrites it,
    a shared one adds its line; a refused process reads it to name them (lines of holders
    that are gone are skipped: the lock itself is the truth, the list only names)."""

    def __init__(self, data_dir: Path, role: str, *, shared: bool = False) -> None:
        self.data_dir = data_dir
        self.path = data_dir / LOCK_FILE
        self.shared = shared
        self.holder = Holder(os.getpid(), role)
        self._descriptor: int | None = None

    def acquire(self) -> None:
        """Take the lock at once or raise DataDirInUse; never waits."""
        if self._descriptor is not None:
            return
        prepare_data_dir(self.data_dir)
        make_private_file(self.path)
        # O_APPEND: the lines of holders sharing the lock never overwrite each other.
        descriptor = os.open(self.path, os.O_RDWR | os.O_APPEND)
        mode = fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX
        try:
            fcntl.flock(descriptor, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            holders = _live_holders(descriptor)
            os.close(descriptor)
            raise DataDirInUse(self.data_dir, holders) from None
        if not self.shared:
            os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{self.holder.pid} {self.holder.role}\n".encode())
        self._descriptor = descriptor

    def release(self) -> None:
        """Unlock; the file stays (removing it would let two processes lock two files)."""
        if self._descriptor is None:
            return
        descriptor, self._descriptor = self._descriptor, None
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        os.close(descriptor)

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _error: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self.release()


def _live_holders(descriptor: int) -> list[Holder]:
    text = os.pread(descriptor, 64 * 1024, 0).decode(errors="replace")
    holders: dict[int, Holder] = {}
    for line in text.splitlines():
        pid_text, _, role = line.partition(" ")
        if pid_text.isdigit() and _alive(int(pid_text)):
            holders[int(pid_text)] = Holder(int(pid_text), role)
    return list(holders.values())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True
