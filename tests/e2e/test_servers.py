"""`python -m app` under either ASGI server it offers (APP_SERVER=uvicorn|granian): each
starts, answers, finishes the requests in flight on SIGTERM, runs the app's shutdown and
exits 0, in one process. (tests/e2e/test_crash.py proves the default server's graceful
stop under load with nothing lost across the restart.)"""

from __future__ import annotations

import random
import time
from pathlib import Path

import anyio
import httpx
import pytest

from tests.e2e.test_crash import GRACEFUL_SECONDS, orders_pouring_in, register_users
from tests.support.server import served

pytestmark = [pytest.mark.anyio, pytest.mark.slow]  # each starts real servers

SERVERS = ("uvicorn", "granian")


@pytest.mark.parametrize("server", SERVERS)
async def test_python_m_app_serves_and_stops_cleanly_under(server: str, tmp_path: Path) -> None:
    with anyio.fail_after(60):
        async with served(tmp_path, {"APP_SERVER": server, "APP_LOG_LEVEL": "INFO"}) as seams:
            async with httpx.AsyncClient(base_url=seams.url, timeout=10.0) as client:
                health = await client.get("/health")
                bus = await client.get("/api/admin/bus", headers=seams.admin)
            pids = _children(seams.process.pid)
            code = await seams.terminate()
            log = seams.log_tail(lines=200)

    assert (health.status_code, bus.status_code) == (200, 200)
    assert f"with {server}" in log, log  # the server it was asked for
    assert code == 0, log
    # One process: docs/decisions/0002-one-worker.md.
    assert pids == [], f"{server} started child processes {pids}: one process"
    # The app's shutdown ran: every store was closed, and SQLite removes a closed WAL.
    assert _open_wal_files(tmp_path) == []


@pytest.mark.parametrize("server", SERVERS)
async def test_sigterm_answers_the_requests_in_flight_under(server: str, tmp_path: Path) -> None:
    with anyio.fail_after(60):
        async with served(tmp_path, {"APP_SERVER": server}) as seams:
            users = await register_users(seams.url)
            async with orders_pouring_in(seams.url, users, random.Random(7)) as load:
                await anyio.sleep(0.5)  # let the clients get going
                in_flight, answered = load.in_flight, load.answered
                signalled = time.monotonic()
                code = await seams.terminate(timeout=GRACEFUL_SECONDS + 5)
                took = time.monotonic() - signalled
            log = seams.log_tail()

    assert in_flight > 0, "nothing was in flight at the signal: the test proves nothing"
    assert load.answered > answered, f"none of {in_flight} requests in flight was answered"
    assert not load.truncated, load.truncated[:10]
    assert not load.unexpected, load.unexpected[:10]
    assert took < GRACEFUL_SECONDS, f"took {took:.1f}s to stop; log tail:\n{log}"
    assert code == 0, f"exit code {code} after SIGTERM; log tail:\n{log}"


def _open_wal_files(data_dir: Path) -> list[str]:
    return sorted(path.name for path in data_dir.glob("*.db-wal"))


def _children(pid: int) -> list[int]:
    """The process's child processes (Linux /proc; none where it cannot be read)."""
    try:
        tasks = Path(f"/proc/{pid}/task").iterdir()
        return [int(child) for task in tasks for child in (task / "children").read_text().split()]
    except OSError:
        return []
