"""A PostgreSQL server of the test's own: its `initdb` in a temporary directory, a free port,
started, stopped and started again by the test, removed afterwards. Never the machine's
shared server: a test may stop this one under load (the database that restarts, issue 15).

The binaries are PostgreSQL's own (initdb, pg_ctl), run as the `postgres` OS user when the
test runs as root (PostgreSQL refuses root); without them the test skips with the reason,
unless SEAMS_REQUIRE_SERVICES=1 (CI), which fails it instead.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from app.split.cluster import free_port
from tests.support.tiers import require_marks, skip_or_fail

BINARIES = (
    "/usr/lib/postgresql/16/bin",
    "/usr/lib/postgresql/15/bin",
    "/usr/lib/postgresql/14/bin",
)
START_SECONDS = 30
OS_USER = "postgres"


def postgres_bin_dir() -> Path | None:
    """Where initdb and pg_ctl are (SEAMS_POSTGRES_BIN, PATH, or Debian's versioned dirs)."""
    configured = os.environ.get("SEAMS_POSTGRES_BIN")
    candidates = [configured] if configured else []
    on_path = shutil.which("pg_ctl")
    candidates += [str(Path(on_path).parent)] if on_path else []
    candidates += list(BINARIES)
    for candidate in candidates:
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    return None


@dataclass
class PrivatePostgres:
    """One private server: `stop()` and `start()` it as often as the test needs."""

    bin_dir: Path
    root: Path  # its data, socket and log; owned by the user it runs as
    host: str = "127.0.0.1"  # where it listens (an address on a test's bridge, say)
    port: int = 0
    netns: str | None = None  # the network namespace it runs in (tests/support/netns.py)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@{self.host}:{self.port}/{database}"

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8")
        # initdb trusts loopback only; on a bridge, the hosts of its subnet too (a test's).
        with (self.data / "pg_hba.conf").open("a") as rules:
            rules.write("host all all samenet trust\n")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses={self.host}"
        options += " -c fsync=off -c max_connections=200"
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "-t",
            str(START_SECONDS),
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """`fast`: every connection is cut and the server stops, as in a restart; `immediate`:
        as when it crashes."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        status = subprocess.run(
            [*self._as_owner(), str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "status"],
            capture_output=True,
        )
        return status.returncode == 0

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError as error:
            return f"(no log: {error})"

    def _run(self, binary: str, *arguments: str) -> None:
        done = subprocess.run(
            [*self._as_owner(), str(self.bin_dir / binary), *arguments],
            capture_output=True,
            text=True,
            timeout=START_SECONDS + 30,
        )
        if done.returncode != 0:
            raise AssertionError(
                f"{binary} {' '.join(arguments)} failed ({done.returncode}):\n"
                f"{done.stdout}{done.stderr}\n{self.log_tail()}"
            )

    def _as_owner(self) -> list[str]:
        """PostgreSQL refuses to run as root: as root, run it as the postgres user (in its
        network namespace, if it has one)."""
        inside = ["ip", "netns", "exec", self.netns] if self.netns else []
        return [*inside, "runuser", "-u", OS_USER, "--"] if os.geteuid() == 0 else inside


@asynccontextmanager
async def private_postgres(
    databases: Sequence[str] = (), *, host: str = "127.0.0.1", netns: str | None = None
) -> AsyncIterator[PrivatePostgres]:
    """A private server, started, with `databases` created in it; stopped (immediately, if
    the test left it running) and removed when the block ends."""
    require_marks("services")
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        skip_or_fail("no PostgreSQL binaries (initdb, pg_ctl): apt-get install postgresql")
        raise AssertionError("unreachable")  # skip_or_fail raises
    if os.geteuid() == 0 and not _has_user(OS_USER):
        skip_or_fail(f"running as root and no {OS_USER!r} user to run PostgreSQL as")
    root = Path(tempfile.mkdtemp(prefix="seams-pg-"))
    if os.geteuid() == 0:
        owner = pwd.getpwnam(OS_USER)
        os.chown(root, owner.pw_uid, owner.pw_gid)
    server = PrivatePostgres(bin_dir, root, host=host, port=free_port(), netns=netns)
    try:
        server.init()
        server.start()
        await create_databases(server, databases)
        yield server
    finally:
        if server.running():
            server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


async def create_databases(server: PrivatePostgres, names: Sequence[str]) -> None:
    import asyncpg

    admin = await asyncpg.connect(host=server.host, port=server.port, user="postgres")
    try:
        for name in names:
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
