"""A process that stopped answering can be asked what it is doing: `kill -USR1 <pid>` writes
every thread's stack to its log, and the process goes on serving."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from tests.support.server import served
from tests.support.waits import until

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def test_sigusr1_writes_every_threads_stack_and_the_server_goes_on(tmp_path: Path) -> None:
    async with served(tmp_path / "data") as server:
        server.process.send_signal(signal.SIGUSR1)
        await until(
            lambda: "most recent call first" in server.log_path.read_text(errors="replace"),
            "the stacks in the log",
        )
        async with httpx.AsyncClient(base_url=server.url) as client:
            assert (await client.get("/health")).status_code == 200

    log = server.log_path.read_text(errors="replace")
    assert "Thread" in log and "File " in log
