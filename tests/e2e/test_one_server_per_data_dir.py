"""One server per data dir: a second `python -m app` on a data dir in use, or create-admin
while a server runs, refuses at once naming the pid that holds it; the lock dies with its
holder, so a SIGKILL never leaves a stale one."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import pytest

from app.split.cluster import free_port
from tests.support.nats import nats_server
from tests.support.server import (
    run_briefly,
    served,
    served_alone,
    server_env,
    until_answers,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]  # each starts real processes

REFUSED = 2


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
            await until_answers(f"http://127.0.0.1:{port}", "/health", module)
            code, output = await run_briefly(
                ["--data-dir", str(data_dir), "--port", str(free_port())]
            )
        finally:
            module.kill()
            await module.wait()

    assert code == REFUSED, output
    assert f"in use by pid {module.pid} (python -m app --modules payments)" in output
