"""Split mode on hosts that are really apart (issue 15, point 7): the broker, PostgreSQL, the
gateway and each module process (payments twice) in network namespaces of their own, each at
its own address on a bridge, each keeping its files in a data dir no other process opens.
Nothing can lean on a shared 127.0.0.1: every process binds and announces its own address,
and reaches the broker and the database at theirs. Users, payments and notifications keep
their stores in PostgreSQL; orders keeps its SQLite documents on its own host (across hosts
for real, MongoDB: README, stores).

The flow (register, order, PAID, notification) runs through the gateway from the test's own
namespace, then a payments replica's host is SIGKILLed under orders: nothing lost, nothing
charged twice. Needs root and iproute2 (tests/support/netns.py).
"""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests.e2e.test_cluster_supervision import _pages, completed, place
from tests.support.nats import nats_server_binary
from tests.support.netns import Hosts, hosts
from tests.support.private_postgres import private_postgres
from tests.support.seams import Driver
from tests.support.split import SECRET, SPLIT_ENV, log_in_admin, store_admin
from tests.support.tiers import require_marks, skip_or_fail

pytestmark = [pytest.mark.anyio, pytest.mark.services, pytest.mark.split, pytest.mark.slow]

SQL_MODULES = ("users", "payments", "notifications")
# Host name -> the modules its process runs (None: the gateway).
PROCESSES: dict[str, str | None] = {
    "gateway": None,
    "users": "users",
    "orders": "orders",
    "pay1": "payments",
    "pay2": "payments",
    "notify": "notifications",
}
PORT = 8000  # the same on every host: each has its own
# Bound to every interface: pay1 announces the address facing the broker by itself; notify
# says where it is reached with APP_ADVERTISE_URL (as behind a NAT or a load balancer).
EVERY_INTERFACE = ("pay1", "notify")
NATS_PORT = 4222
READY_SECONDS = 60.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Apart:
    hosts: Hosts
    driver: Driver

    @property
    def gateway_url(self) -> str:
        return f"http://{self.hosts['gateway'].address}:{PORT}"


def process_env(hosts_: Hosts, module: str | None, database_urls: dict[str, str]) -> dict[str, str]:
    """What a process on its own host is told: where the broker and its store are, the
    shared key; its own address comes from --host (announced as http://<address>:8000)."""
    env = {
        **SPLIT_ENV,
        "APP_BUS_URL": f"nats://{hosts_['broker'].address}:{NATS_PORT}",
        "APP_SECRET_KEY": SECRET,
        "APP_EPHEMERAL": "false",
        # A killed replica's unacked messages come back after the ack wait: seconds, not 30.
        "APP_BUS_ACK_WAIT_SECONDS": "3",
        "APP_LOG_LEVEL": "INFO",  # the announcements, with the address each gave
    }
    if module is not None:
        env["APP_TRUSTED_PROXIES"] = ""
        if module in database_urls:
            env[f"APP_{module.upper()}_DB_URL"] = database_urls[module]
    return env


def argv_of(name: str, host_address: str, data_dir: Path, module: str | None) -> list[str]:
    role = ["gateway"] if module is None else ["--modules", module]
    bind = "0.0.0.0" if name in EVERY_INTERFACE else host_address
    where = ["--host", bind, "--port", str(PORT)]
    return [sys.executable, "-m", "app", "--data-dir", str(data_dir), *role, *where]


async def ready(apart: Apart) -> None:
    deadline = time.monotonic() + READY_SECONDS
    last = "no answer yet"
    while time.monotonic() < deadline:
        for name, started in apart.hosts.started.items():
            if started.process.poll() is not None:
                raise AssertionError(f"{name} exited:\n{apart.hosts.logs()}")
        try:
            answer = await apart.driver.client.get("/ready")
            if answer.status_code == 200:
                return
            last = answer.text
        except httpx.TransportError as error:
            last = repr(error)
        await anyio.sleep(0.2)
    raise AssertionError(f"not ready after {READY_SECONDS}s: {last}\n{apart.hosts.logs()}")


@asynccontextmanager
async def split_apart(tmp_path: Path) -> AsyncIterator[Apart]:
    require_marks("services", "split", "slow")
    binary = nats_server_binary()
    if binary is None:
        skip_or_fail("no nats-server binary (apt-get install nats-server)")
    assert binary is not None
    with hosts(["broker", "database", *PROCESSES]) as apart_hosts:
        broker = apart_hosts["broker"]
        store = tmp_path / "broker" / "store"
        store.parent.mkdir()
        apart_hosts.run(
            "broker",
            [binary, "-js", "-a", broker.address, "-p", str(NATS_PORT), "-sd", str(store)],
            tmp_path / "broker" / "nats-server.log",
        )
        database = apart_hosts["database"]
        async with private_postgres(
            SQL_MODULES, host=database.address, netns=database.netns
        ) as server:
            urls = {module: server.url(module) for module in SQL_MODULES}
            await store_admin(urls["users"])
            for name, module in PROCESSES.items():
                own = tmp_path / name  # its host's disk: no other process opens it
                own.mkdir(mode=0o700)
                address = apart_hosts[name].address
                env = process_env(apart_hosts, module, urls)
                if name == "notify":
                    env["APP_ADVERTISE_URL"] = f"http://{address}:{PORT}"
                apart_hosts.run(name, argv_of(name, address, own, module), own / "process.log", env)
            gateway = f"http://{apart_hosts['gateway'].address}:{PORT}"
            async with httpx.AsyncClient(base_url=gateway, timeout=30) as client:
                apart = Apart(apart_hosts, Driver(client))
                await ready(apart)
                await log_in_admin(client)
                try:
                    yield apart
                finally:
                    apart_hosts.stop_all()
                    apart_hosts.started.clear()


async def charged_once(driver: Driver, user: dict[str, Any], order_ids: list[str]) -> None:
    payments = await _pages(driver, "/api/payments", user)
    charged = sorted(p["order_id"] for p in payments if p["status"] == "SUCCEEDED")
    assert charged == sorted(order_ids), "an order charged twice or never"


async def test_the_flow_and_a_replica_kill_pass_with_every_process_on_its_own_host(
    tmp_path: Path,
) -> None:
    async with split_apart(tmp_path) as apart:
        driver = apart.driver
        user = await driver.register("Ines")
        placed = [await place(driver, user)]
        await completed(driver, user, placed)  # PAID, and its notification

        placed += [await place(driver, user) for _ in range(10)]
        apart.hosts.kill("pay2")  # its host gone without a word, orders still coming
        placed += [await place(driver, user) for _ in range(20)]
        await completed(driver, user, placed)
        await charged_once(driver, user, placed)

        for name, module in PROCESSES.items():
            if module is not None and name in apart.hosts.started:
                own = f"{apart.hosts[name].address}:{PORT}"
                log = apart.hosts.started[name].log_path.read_text(errors="replace")
                assert f"at http://{own}" in log, f"{name} did not announce {own}:\n{log}"
        logs = apart.hosts.logs()
    assert "Traceback" not in logs, logs
