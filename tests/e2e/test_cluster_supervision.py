"""`python -m app cluster` supervises its processes: one that dies is started again (after a
backoff, said in the cluster's output) while the others keep serving, and nothing placed
meanwhile is lost; `--exit-on-crash` stops everything instead; `--ephemeral` runs in a
temporary data dir that is gone once the cluster exits, however it was stopped.

Each test runs the command itself, as an operator would, and drives it over HTTP only.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests.support.nats import nats_server_binary
from tests.support.seams import Driver
from tests.support.split import free_gateway_port
from tests.support.tiers import require_marks, skip_or_fail

pytestmark = [pytest.mark.anyio, pytest.mark.services, pytest.mark.split, pytest.mark.slow]

CLUSTER_ENV = {
    "APP_PASSWORD_HASHING": "argon2id-fast",
    "APP_LOG_LEVEL": "INFO",
    "APP_RATE_LIMIT_PER_MINUTE": "0",
    "APP_SLOW_CARD_SECONDS": "0.2",
    "APP_PAYMENT_RETRY_BASE_SECONDS": "0.01",
    "APP_BUS_RETRY_BASE_SECONDS": "0.01",
    # A PaymentSucceeded may reach notifications before its UserRegistered (two consumers).
    "APP_BUS_MAX_ATTEMPTS": "10",
    "APP_BUS_RETRY_MAX_SECONDS": "0.5",
    # A killed replica's unacked messages come back after the ack wait: seconds, not 30.
    "APP_BUS_ACK_WAIT_SECONDS": "3",
    "APP_OUTBOX_SWEEP_SECONDS": "1",
    "APP_PAYMENT_RETRY_MAX_SECONDS": "0.5",
}
READY_SECONDS = 60.0
SETTLE_SECONDS = 90.0
STOP_SECONDS = 30.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Cluster:
    """A running `python -m app cluster` and its combined output."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def pids(self, name: str) -> list[int]:
        """Every pid the cluster said it started for a process, oldest first."""
        pattern = rf"\| {re.escape(name)} started \(pid=(\d+)\)"
        return [int(pid) for pid in re.findall(pattern, self.output())]

    def lines_of(self, name: str) -> list[str]:
        """The lines a process printed, prefixed with its name by the cluster."""
        return [line for line in self.output().splitlines() if line[9:].startswith(f"{name} ")]

    def announcements(self, name: str) -> int:
        """How often a process announced itself in discovery (once per start)."""
        return sum("announced" in line for line in self.lines_of(name))

    async def wait_for(self, what: str, seconds: float = 30.0) -> None:
        """Until the output holds `what` (a regular expression)."""
        deadline = time.monotonic() + seconds
        while not re.search(what, self.output()):
            assert self.process.poll() is None, f"the cluster exited:\n{self.output()}"
            assert time.monotonic() < deadline, f"no {what!r} in:\n{self.output()}"
            await anyio.sleep(0.1)

    def stop(self, signum: int = signal.SIGTERM) -> int:
        self.process.send_signal(signum)
        return self.process.wait(STOP_SECONDS)


@contextmanager
def cluster_command(tmp_path: Path, *arguments: str, **env: str) -> Iterator[Cluster]:
    """`python -m app cluster --port P <arguments>`, its output in a file; stopped (SIGTERM,
    then SIGKILL for it and every child it named) if the test left it running."""
    require_marks("services", "split", "slow")
    binary = nats_server_binary()
    if binary is None:
        skip_or_fail("no nats-server binary (apt-get install nats-server)")
    assert binary is not None
    port = free_gateway_port()
    log_path = tmp_path / "cluster.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "cluster", "--port", str(port), *arguments],
            env={
                **os.environ,
                "PATH": f"{Path(binary).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                **CLUSTER_ENV,
                **env,
            },
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[2],
        )
    cluster = Cluster(process, f"http://127.0.0.1:{port}", log_path)
    try:
        yield cluster
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        _kill_leftovers(cluster)


def _kill_leftovers(cluster: Cluster) -> None:
    """Children a failed test left behind (each leads its own session): SIGKILL, if they
    are still ours (the pid may have been reused)."""
    for pid in (int(p) for p in re.findall(r"started \(pid=(\d+)\)", cluster.output())):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"nats-server" in command or b"app" in command:
            os.killpg(pid, signal.SIGKILL)


@asynccontextmanager
async def driven(cluster: Cluster) -> AsyncIterator[Driver]:
    """A client of the cluster's gateway, once its /ready says every module is live."""
    async with httpx.AsyncClient(base_url=cluster.url, timeout=30) as client:
        deadline = time.monotonic() + READY_SECONDS
        status = None
        while status != 200:
            assert cluster.process.poll() is None, f"the cluster exited:\n{cluster.output()}"
            assert time.monotonic() < deadline, f"not ready:\n{cluster.output()}"
            try:
                status = (await client.get("/ready")).status_code
            except httpx.TransportError:
                status = None
            await anyio.sleep(0.2)
        yield Driver(client)


async def completed(driver: Driver, user: dict[str, Any], order_ids: Sequence[str]) -> None:
    """Until every order is PAID and has exactly one payment notice, as its customer sees."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        orders = await _pages(driver, "/api/orders", user)
        notices = await _pages(driver, "/api/notifications", user)
        status = {order["id"]: order["status"] for order in orders}
        noticed = [n["order_id"] for n in notices if n["kind"] == "payment_succeeded"]
        pending = [i for i in order_ids if status.get(i) != "PAID" or i not in noticed]
        assert sorted(noticed) == sorted(set(noticed)), f"a notice twice: {noticed}"
        if not pending:
            return
        assert time.monotonic() < deadline, (
            f"{len(pending)} of {len(order_ids)} orders not PAID and noticed: "
            f"{[(i, status.get(i)) for i in pending[:5]]}"
        )
        await anyio.sleep(0.2)


async def _pages(driver: Driver, path: str, user: dict[str, Any]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {"limit": 200, **({"cursor": cursor} if cursor else {})}
        answer = await driver.client.get(path, params=query, headers=user["headers"])
        assert answer.status_code == 200, answer.text
        items += answer.json()["items"]
        cursor = answer.json()["next_cursor"]
        if cursor is None:
            return items


async def place(driver: Driver, user: dict[str, Any]) -> str:
    """An order, accepted (201), whichever processes are down: its id."""
    answer = await driver.order(user)
    assert answer.status_code == 201, answer.text
    order_id: str = answer.json()["id"]
    return order_id


# The tests.


async def test_a_killed_payments_replica_is_restarted_and_every_order_completes(
    tmp_path: Path,
) -> None:
    with cluster_command(
        tmp_path, "--data-dir", str(tmp_path / "data"), "--replicas", "payments=2"
    ) as cluster:
        async with driven(cluster) as driver:
            user = await driver.register("Kay")
            placed = [await place(driver, user) for _ in range(10)]
            [victim] = cluster.pids("payments.2")
            announced = cluster.announcements("payments.2")

            os.kill(victim, signal.SIGKILL)
            placed += [await place(driver, user) for _ in range(20)]  # while it is down
            await cluster.wait_for(
                r"payments\.2 exited with -9 \(SIGKILL\); restarting in 0\.5 s \(restart 1\)"
            )
            deadline = time.monotonic() + READY_SECONDS
            while cluster.announcements("payments.2") == announced:  # back, and says so
                assert time.monotonic() < deadline, cluster.output()
                await anyio.sleep(0.1)
            placed += [await place(driver, user) for _ in range(10)]
            await completed(driver, user, placed)

        assert len(cluster.pids("payments.2")) == 2 and cluster.pids("payments.2")[0] == victim
        assert len(cluster.pids("payments.1")) == 1  # the others kept running, untouched
        assert len(cluster.pids("orders")) == 1 and len(cluster.pids("gateway")) == 1
        assert "sending SIGTERM" not in cluster.output().split("restarting in")[0]
        assert cluster.stop() == 0, cluster.output()


async def test_while_the_only_payments_process_is_down_the_gateway_says_so_and_orders_wait_for_it(
    tmp_path: Path,
) -> None:
    with cluster_command(tmp_path, "--data-dir", str(tmp_path / "data")) as cluster:
        async with driven(cluster) as driver:
            user = await driver.register("Lou")
            first = await place(driver, user)
            await completed(driver, user, [first])
            [payments] = cluster.pids("payments")

            os.kill(payments, signal.SIGKILL)
            down = await driver.client.get("/api/payments", headers=user["headers"])
            meanwhile = await place(driver, user)  # orders is up: accepted as usual

            assert down.status_code == 503, down.text
            assert down.headers["content-type"].startswith("application/problem+json")
            assert "'payments' has no live instance" in down.json()["detail"]
            await cluster.wait_for(r"payments exited with -9 \(SIGKILL\); restarting in 0\.5 s")
            await completed(driver, user, [first, meanwhile])  # charged once it is back
            assert len(cluster.pids("payments")) == 2
        assert cluster.stop() == 0, cluster.output()


async def test_with_exit_on_crash_a_killed_module_stops_the_cluster_with_a_failure(
    tmp_path: Path,
) -> None:
    with cluster_command(
        tmp_path, "--data-dir", str(tmp_path / "data"), "--exit-on-crash"
    ) as cluster:
        async with driven(cluster):
            [orders] = cluster.pids("orders")
            os.kill(orders, signal.SIGKILL)
            status = cluster.process.wait(STOP_SECONDS)

    output = cluster.output()
    assert status == 128 + signal.SIGKILL, output
    assert "orders exited with -9 (SIGKILL); --exit-on-crash: stopping the cluster" in output
    for name in ("gateway", "users", "payments", "notifications", "nats"):
        assert f"{name} stopped (rc=0)" in output, output
    assert "restarting" not in output and len(cluster.pids("orders")) == 1


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_an_ephemeral_cluster_works_and_leaves_no_directory_behind(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    with cluster_command(
        tmp_path, "--ephemeral", "--replicas", "payments=2", TMPDIR=str(temp)
    ) as cluster:
        async with driven(cluster) as driver:
            user = await driver.register("Max")
            await completed(driver, user, [await place(driver, user) for _ in range(3)])
            [data_dir] = list(temp.glob("seams-cluster-*"))
            assert (data_dir / "payments.db").exists()  # both replicas' one store
            assert oct(data_dir.stat().st_mode & 0o777) == "0o700"

        assert cluster.stop(stop_signal) == 0, cluster.output()
    assert f"{stop_signal.name} received" in cluster.output()
    assert list(temp.iterdir()) == []


async def test_the_private_broker_and_the_gateway_are_restarted_when_they_die(
    tmp_path: Path,
) -> None:
    with cluster_command(tmp_path, "--data-dir", str(tmp_path / "data")) as cluster:
        async with driven(cluster) as driver:
            user = await driver.register("Ned")
            placed = [await place(driver, user)]
            await completed(driver, user, placed)
            [broker] = cluster.pids("nats")

            os.kill(broker, signal.SIGKILL)
            await cluster.wait_for(r"nats exited with -9 \(SIGKILL\); restarting in 0\.5 s")
            await cluster.wait_for(r"nats started \(pid=\d+\)(.|\n)*nats started \(pid=\d+\)")
            [gateway] = cluster.pids("gateway")
            os.kill(gateway, signal.SIGKILL)
            await cluster.wait_for(r"gateway exited with -9 \(SIGKILL\); restarting in 0\.5 s")

        async with driven(cluster) as driver:  # ready again: the new gateway sees every module
            placed.append(await place(driver, user))  # the same key signs: the token holds
            await completed(driver, user, placed)

        assert len(cluster.pids("nats")) == 2 and len(cluster.pids("gateway")) == 2
        assert all(len(cluster.pids(m)) == 1 for m in ("users", "orders", "payments"))
        assert cluster.stop() == 0, cluster.output()
