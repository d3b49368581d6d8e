"""`python -m app` as a real process on a data dir, for tests that kill it or stop it (each
such test is marked `slow`: an interpreter of its own takes a second or more to start).

`served(data_dir)` starts the server on a free port, waits (bounded) until /ready answers
200, logs its admin in, and makes sure the process is gone afterwards. The first start on
a data dir creates that admin with `python -m app create-admin`, as an operator would.
`server.wait_quiet()` waits (bounded) until the bus has nothing under way. The waits poll
an external process, so they sleep briefly between polls; every wait has a deadline and
fails with what it last saw.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
from anyio.abc import Process

from app.split.cluster import free_port
from tests.support.tiers import require_marks

SERVER_ENV = {
    "APP_PASSWORD_HASHING": "argon2id-fast",
    "APP_LOG_LEVEL": "WARNING",
    "APP_SLOW_CARD_SECONDS": "0.2",
    "APP_PAYMENT_RETRY_BASE_SECONDS": "0.01",
    "APP_RATE_LIMIT_PER_MINUTE": "0",  # these servers are driven hard on purpose
}
ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "admin password"
READY_SECONDS = 20.0
COMMAND_SECONDS = 30.0
STOP_SECONDS = 15.0  # above the server's own graceful shutdown timeout (10 s)
QUIET_SECONDS = 30.0
QUIET_POLLS = 3
POLL_SECONDS = 0.02

_starts = itertools.count(1)


@dataclass
class Server:
    url: str
    process: Process
    log_path: Path
    admin: dict[str, str] = field(default_factory=dict)  # the admin's Authorization header

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as error:
            return f"(no log: {error})"
        return "\n".join(text.splitlines()[-lines:])

    async def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as when the machine loses the process."""
        await self._signal(signal.SIGKILL, STOP_SECONDS)

    async def terminate(self, timeout: float = STOP_SECONDS) -> int:
        """SIGTERM, then wait (bounded) for the process to exit; its return code."""
        return await self._signal(signal.SIGTERM, timeout)

    async def _signal(self, signal_number: signal.Signals, timeout: float) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal_number)
        with anyio.move_on_after(timeout):
            return await self.process.wait()
        raise AssertionError(
            f"server pid {self.process.pid} still running {timeout}s after "
            f"{signal_number.name}; log tail:\n{self.log_tail()}"
        )

    async def bus_state(self) -> dict[str, Any]:
        """GET /api/admin/bus: {"running", "busy", "dead_letters", "counts"}."""
        async with httpx.AsyncClient(base_url=self.url, headers=self.admin, timeout=5.0) as client:
            response = await client.get("/api/admin/bus")
        assert response.status_code == 200, response.text
        state: dict[str, Any] = response.json()
        return state

    async def wait_quiet(self, timeout: float = QUIET_SECONDS) -> dict[str, Any]:
        """Wait until the bus has had nothing under way on several polls in a row; its state."""
        deadline = time.monotonic() + timeout
        quiet_polls = 0
        async with httpx.AsyncClient(base_url=self.url, headers=self.admin, timeout=5.0) as client:
            while True:
                response = await client.get("/api/admin/bus")
                assert response.status_code == 200, response.text
                state: dict[str, Any] = response.json()
                quiet_polls = quiet_polls + 1 if state["busy"] == 0 else 0
                if quiet_polls == QUIET_POLLS:
                    return state
                if time.monotonic() > deadline:
                    raise AssertionError(f"bus still busy after {timeout}s: {state}")
                await anyio.sleep(POLL_SECONDS)


def server_env(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without any APP_* of the caller's, plus the test settings."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("APP_")}
    return {**env, **SERVER_ENV, **(overrides or {})}


def new_log(data_dir: Path) -> Path:
    """A fresh log file's path in the data dir, for one run of `python -m app`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    return data_dir / f"server.{next(_starts)}.log"


def has_users_store(data_dir: Path) -> bool:
    return (data_dir / "users.db").exists()


async def run_create_admin(
    data_dir: Path,
    email: str,
    *flags: str,
    password: str,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """`python -m app create-admin --email <email> --password-stdin` on the data dir, with
    the password on stdin; whatever it answered."""
    require_marks("slow")  # an interpreter of its own: a second or more
    command = [sys.executable, "-m", "app", "create-admin", "--email", email]
    command += ["--password-stdin", "--data-dir", str(data_dir), *flags]
    with anyio.fail_after(COMMAND_SECONDS):
        return await anyio.run_process(
            command, input=f"{password}\n".encode(), env=server_env(env), check=False
        )


async def create_admin(data_dir: Path, env: Mapping[str, str] | None = None) -> None:
    """The admin `served` logs in as, made as an operator would."""
    result = await run_create_admin(data_dir, ADMIN_EMAIL, password=ADMIN_PASSWORD, env=env)
    assert result.returncode == 0, (result.stdout + result.stderr).decode(errors="replace")


@asynccontextmanager
async def served(data_dir: Path, env: Mapping[str, str] | None = None) -> AsyncIterator[Server]:
    """`python -m app --data-dir data_dir` on a free port, ready, its admin logged in; gone
    when the block ends."""
    if not has_users_store(data_dir):
        await create_admin(data_dir, env)
    async with served_alone(data_dir, new_log(data_dir), env) as server:
        server.admin = await log_in(server.url, ADMIN_EMAIL, ADMIN_PASSWORD)
        yield server


@asynccontextmanager
async def served_alone(
    data_dir: Path, log_path: Path, env: Mapping[str, str] | None = None
) -> AsyncIterator[Server]:
    """`python -m app --data-dir data_dir` on a free port, ready, with no admin; its log
    where the caller says (outside the data dir: whatever the data dir holds, the server
    wrote); gone after."""
    require_marks("slow")
    port = free_port()
    with log_path.open("wb") as log:
        process = await anyio.open_process(
            [sys.executable, "-m", "app", "--data-dir", str(data_dir), "--port", str(port)],
            env=server_env(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            umask=0o022,  # the usual umask: what the server makes private, it makes so itself
        )
    server = Server(url=f"http://127.0.0.1:{port}", process=process, log_path=log_path)
    try:
        await until_answers(server.url, "/ready", server.process, server.log_tail)
        yield server
    finally:
        with anyio.CancelScope(shield=True):
            await server.kill()


async def run_briefly(
    arguments: list[str],
    env: Mapping[str, str] | None = None,
    seconds: float = 15.0,
    stdin: bytes = b"",
) -> tuple[int | None, str]:
    """`python -m app <arguments>`, given `seconds` to exit: (its exit code, or None if it
    was still running and had to be killed; its output)."""
    require_marks("slow")
    process = await anyio.open_process(
        [sys.executable, "-m", "app", *arguments],
        env=server_env(env),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert process.stdin is not None
    await process.stdin.send(stdin)
    await process.stdin.aclose()
    output = bytearray()

    async def read_all() -> None:
        assert process.stdout is not None
        async for chunk in process.stdout:
            output.extend(chunk)

    code: int | None = None
    async with anyio.create_task_group() as readers:
        readers.start_soon(read_all)
        with anyio.move_on_after(seconds):
            code = await process.wait()
        if code is None:
            process.kill()
            await process.wait()
    await process.aclose()
    return code, output.decode(errors="replace")


async def log_in(url: str, email: str, password: str) -> dict[str, str]:
    """POST /api/auth/token: the Authorization header for this user."""
    async with httpx.AsyncClient(base_url=url, timeout=10.0) as client:
        response = await client.post("/api/auth/token", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def until_answers(
    url: str,
    path: str,
    process: Process,
    log_tail: Callable[[], str] = lambda: "(no log kept)",
    seconds: float = READY_SECONDS,
) -> None:
    """Poll `path` (bounded) until the process at `url` answers it 200; fail at once if the
    process exits first, with what it last said and its log tail."""
    deadline = time.monotonic() + seconds
    last = "no answer yet"
    async with httpx.AsyncClient(base_url=url, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if process.returncode is not None:
                raise AssertionError(
                    f"{url} exited with {process.returncode} before {path} answered; "
                    f"log tail:\n{log_tail()}"
                )
            try:
                response = await client.get(path)
            except httpx.TransportError as error:
                last = repr(error)
            else:
                if response.status_code == 200:
                    return
                last = f"{response.status_code} {response.text}"
            await anyio.sleep(0.05)
    raise AssertionError(
        f"{url}{path} not 200 after {seconds}s (last: {last}); log tail:\n{log_tail()}"
    )
