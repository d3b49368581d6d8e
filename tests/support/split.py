"""The system split into real processes over a private NATS, for tests that need both modes.

`split_system(tmp_path)` runs what `python -m app cluster` runs (the same plan: the gateway,
one process per module, replicas on request) but starts each process itself, so a test can
SIGKILL one replica or restart the broker. Users and payments keep their stores in fresh
PostgreSQL databases (replicas across hosts would need that); orders, notifications and
the bus's own store are files in the data dir. The driver speaks only HTTP to the gateway,
like a client; `settle()` asks every module process for its bus state directly, with a
proof it signs with the shared test secret, as the gateway would.

Without nats-server or PostgreSQL these tests skip with the reason, unless
SEAMS_REQUIRE_SERVICES=1 (CI), which fails them instead.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import anyio
import httpx

from app.cluster import Child, plan
from app.gateway.auth import jwt_auth
from app.gateway.proof import GatewayProof
from app.kernel.identity import Caller
from app.settings import Settings
from tests.support.nats import NatsServer, nats_server
from tests.support.seams import Driver
from tests.support.stores import postgres_databases

SECRET = "split-mode-test-secret-key-0123456789-abcdefghijklmnop"
MODULES = ("users", "orders", "payments", "notifications")
SPLIT_ENV = {
    "APP_PASSWORD_HASHING": "argon2id-fast",
    "APP_LOG_LEVEL": "WARNING",
    "APP_RATE_LIMIT_PER_MINUTE": "0",
    "APP_SLOW_CARD_SECONDS": "0.2",
    "APP_PAYMENT_RETRY_BASE_SECONDS": "0.01",
    "APP_BUS_RETRY_BASE_SECONDS": "0.01",
    "APP_BUS_RETRY_MAX_SECONDS": "0.1",
    "APP_REPLICA_WAIT_SECONDS": "5",
}
READY_SECONDS = 40.0
STOP_SECONDS = 15.0
QUIET_POLLS = 3
POLL_SECONDS = 0.05


@dataclass
class Running:
    child: Child
    process: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.child.port}"

    def log_tail(self, lines: int = 30) -> str:
        self.log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(text)


class Split(Driver):
    def __init__(self, client: httpx.AsyncClient, gateway_url: str, nats: NatsServer) -> None:
        super().__init__(client)
        self.gateway_url = gateway_url
        self.nats = nats
        self.processes: dict[str, Running] = {}
        self._proof = GatewayProof(SECRET)

    def module_processes(self) -> list[Running]:
        return [p for name, p in self.processes.items() if name != "gateway"]

    def kill(self, name: str) -> None:
        """SIGKILL one process (e.g. "payments.2"): no goodbye, no withdrawal."""
        running = self.processes.pop(name)
        running.process.send_signal(signal.SIGKILL)
        running.process.wait(STOP_SECONDS)
        running.log.close()

    async def bus_state(self, running: Running) -> dict[str, Any]:
        """A module process's GET /api/admin/bus, asked directly with an admin's proof."""
        proof = self._proof.issue(
            caller=Caller(id="test-admin", role="admin"),
            method="GET",
            path="/api/admin/bus",
            client_host=None,
        )
        async with httpx.AsyncClient(base_url=running.url, timeout=5.0) as client:
            response = await client.get("/api/admin/bus", headers={"x-seams-gateway-proof": proof})
        assert response.status_code == 200, f"{running.child.name}: {response.text}"
        state: dict[str, Any] = response.json()
        return state

    async def settle(self, timeout: float = 30.0) -> None:
        """Until every module process has nothing under way and the broker holds nothing
        for it, on several polls in a row."""
        deadline = time.monotonic() + timeout
        quiet = 0
        states: dict[str, Any] = {}
        while quiet < QUIET_POLLS:
            if time.monotonic() > deadline:
                raise AssertionError(f"not quiet after {timeout}s: {states}")
            states = {}
            for running in self.module_processes():
                try:
                    states[running.child.name] = await self.bus_state(running)
                except httpx.TransportError as error:
                    states[running.child.name] = {"busy": -1, "backlog": -1, "error": repr(error)}
            busy = any(s["busy"] != 0 or s["backlog"] != 0 for s in states.values())
            quiet = 0 if busy else quiet + 1
            await anyio.sleep(POLL_SECONDS)

    def logs(self) -> str:
        return "\n\n".join(
            f"--- {name}\n{running.log_tail()}" for name, running in self.processes.items()
        )


def _start(child: Child, data_dir: Path, env: Mapping[str, str]) -> Running:
    log_path = data_dir / f"{child.name}.log"
    log = open(log_path, "ab")  # noqa: SIM115 - closed when the process is stopped
    process = subprocess.Popen(
        child.argv,
        env={**os.environ, **env, **child.env},
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=Path(__file__).resolve().parents[2],
    )
    return Running(child, process, log_path, log)


def _stop(running: Running) -> None:
    if running.process.poll() is None:
        running.process.terminate()
        try:
            running.process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            running.process.kill()
            running.process.wait(STOP_SECONDS)
    running.log.close()


async def _wait_ready(split: Split) -> None:
    deadline = time.monotonic() + READY_SECONDS
    last = "no answer yet"
    async with httpx.AsyncClient(base_url=split.gateway_url, timeout=2.0) as client:
        while time.monotonic() < deadline:
            for name, running in split.processes.items():
                if running.process.poll() is not None:
                    raise AssertionError(
                        f"{name} exited with {running.process.returncode}:\n{split.logs()}"
                    )
            try:
                response = await client.get("/ready")
                if response.status_code == 200:
                    return
                last = response.text
            except httpx.TransportError as error:
                last = repr(error)
            await anyio.sleep(0.1)
    raise AssertionError(f"the split is not ready after {READY_SECONDS}s: {last}\n{split.logs()}")


def admin_headers() -> dict[str, str]:
    """An admin's bearer token, signed with the shared secret like the gateway's own."""
    settings = Settings.from_env({}, secret_key=SECRET)
    token = jwt_auth(settings, SECRET).create_token(
        identifier="test-admin", token_extras={"role": "admin"}
    )
    return {"Authorization": f"Bearer {token}"}


@asynccontextmanager
async def split_system(
    tmp_path: Path, *, replicas: Mapping[str, int] | None = None, **env: str
) -> AsyncIterator[Split]:
    """Every module in its own process (payments in `replicas` processes), a gateway in
    front, a private nats-server under them; stopped, and the databases dropped, after."""
    data_dir = tmp_path / "split"
    data_dir.mkdir(parents=True, exist_ok=True)
    async with AsyncExitStack() as stack:
        nats = stack.enter_context(nats_server(tmp_path / "nats"))
        databases = await stack.enter_async_context(postgres_databases(("users", "payments")))
        overrides = {f"APP_{m.upper()}_DB_URL": url for m, url in databases.items()}
        settings = Settings.from_env({}, data_dir=str(data_dir), port=free_gateway_port())
        the_plan = plan(
            settings,
            MODULES,
            replicas=dict(replicas or {}),
            nats_url=nats.url,
            secret_key=SECRET,
            python=sys.executable,
        )
        client = await stack.enter_async_context(
            httpx.AsyncClient(base_url=the_plan.gateway_url, headers=admin_headers(), timeout=30)
        )
        split = Split(client, the_plan.gateway_url, nats)
        full_env = {**SPLIT_ENV, **overrides, **env}
        try:
            for child in the_plan.children:
                split.processes[child.name] = _start(child, data_dir, full_env)
            await _wait_ready(split)
            yield split
        finally:
            for running in list(split.processes.values()):
                _stop(running)


def free_gateway_port() -> int:
    """A port with the next 16 free too: the plan puts module processes on port+1, +2, …"""
    from tests.support.server import free_port

    for _ in range(50):
        base = free_port()
        if base > 65_000:
            continue
        if all(_port_free(base + offset) for offset in range(1, 17)):
            return base
    raise AssertionError("no run of 17 free ports on loopback")


def _port_free(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
