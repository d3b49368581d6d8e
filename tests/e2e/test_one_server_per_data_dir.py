"""One server per data dir: a second `python -m app` on a data dir in use, or create-admin
while a server runs, refuses at once naming the pid that holds it; the lock dies with its
holder, so a SIGKILL never leaves a stale one."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import anyio
import httpx
import pytest

from tests.support.nats import nats_server
from tests.support.server import free_port, run_briefly, served, served_alone, server_env

pytestmark = [pytest.mark.anyio, pytest.mark.slow]  # each starts real processes

REFUSED = 2
HEALTHY_SECONDS = 20.0


async def wait_healthy(url: str) -> None:
    """Poll /health (bounded) until the process answers."""
    deadline = time.monotonic() + HEALTHY_SECONDS
    last = "no answer yet"
    async with httpx.AsyncClient(base_url=url, timeout=2.0) as client:
        while time.monotonic() < deadline:
            try:
                response = await client.get("/health")
            except httpx.TransportError as error:
                last = repr(error)
            else:
                if response.status_code == 200:
                    return
                last = f"{response.status_code} {response.text}"
            await anyio.sleep(0.05)
    raise AssertionError(f"{url} not healthy after {HEALTHY_SECONDS}s (last: {last})")


async def test_a_second_server_on_the_same_data_dir_refuses_until_the_first_is_killed(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "var"
    with anyio.fail_after(90):
        async with served_alone(data_dir, tmp_path / "first.log") as first:
            second = await run_briefly(["--data-dir", str(data_dir), "--port", str(free_port())])
            await first.kill()  # SIGKILL: nothing of the first one runs to release the lock
            async with served_alone(data_dir, tmp_path / "third.log") as third:
                assert third.process.returncode is None

    code, output = second
    assert code == REFUSED, output
    assert (
        f"python -m app: the data dir {data_dir.resolve()} is in use by pid {first.process.pid} "
        "(python -m app); stop it first or use another --data-dir"
    ) in output


async def test_create_admin_refuses_while_a_server_runs_on_the_data_dir(tmp_path: Path) -> None:
    with anyio.fail_after(90):
        async with served(tmp_path) as server:
            arguments = ["create-admin", "--data-dir", str(tmp_path), "--email", "x@example.com"]
            code, output = await run_briefly(
                [*arguments, "--password-stdin"], stdin=b"a long enough password\n"
            )
            still_serving = server.process.returncode is None

    assert code == REFUSED, output
    assert f"in use by pid {server.process.pid} (python -m app)" in output
    assert "stop the server first" in output
    assert still_serving


@pytest.mark.services
async def test_a_monolith_refuses_while_a_module_process_holds_the_data_dir(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "var"
    with anyio.fail_after(90), nats_server(tmp_path / "nats") as nats:
        split_env = {
            "APP_BUS_URL": nats.url,
            "APP_SECRET_KEY": "a split-mode secret key of at least 32 characters",
        }
        port = free_port()
        arguments = ["--modules", "payments", "--data-dir", str(data_dir), "--port", str(port)]
        module = await anyio.open_process(
            [sys.executable, "-m", "app", *arguments], env=server_env(split_env)
        )
        try:
            await wait_healthy(f"http://127.0.0.1:{port}")
            code, output = await run_briefly(
                ["--data-dir", str(data_dir), "--port", str(free_port())]
            )
        finally:
            module.kill()
            await module.wait()

    assert code == REFUSED, output
    assert f"in use by pid {module.pid} (python -m app --modules payments)" in output
