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
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

import anyio
import httpx
from anyio.from_thread import start_blocking_portal

from app.gateway.auth import jwt_auth
from app.kernel.identity import Caller
from app.kernel.ids import utcnow
from app.kernel.sealing import new_key
from app.kernel.settings import Settings
from app.modules.users.passwords import make_hasher
from app.modules.users.store import UsersStore
from app.modules.users.user import User
from app.split.cluster import Child, plan
from app.split.proof import GatewayProof
from tests.support.nats import NatsServer, nats_server
from tests.support.seams import Driver
from tests.support.stores import postgres_databases
from tests.support.tiers import require_marks
from tests.support.work import HandedOff

SECRET = "split-mode-test-secret-key-0123456789-abcdefghijklmnop"
MODULES = ("users", "orders", "payments", "notifications")
SPLIT_ENV = {
    "APP_PASSWORD_HASHING": "argon2id-fast",
    "APP_LOG_LEVEL": "WARNING",
    "APP_RATE_LIMIT_PER_MINUTE": "0",
    "APP_SLOW_CARD_SECONDS": "0.2",
    "APP_PAYMENT_RETRY_BASE_SECONDS": "0.01",
    "APP_BUS_RETRY_BASE_SECONDS": "0.01",
    # Over NATS each event type has its own consumer, so a PaymentSucceeded can reach
    # notifications before the user's UserRegistered: that handler answers NotYet and waits
    # without spending attempts (docs/decisions/0032), so the default five attempts hold.
    "APP_BUS_RETRY_MAX_SECONDS": "0.5",
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
    def __init__(
        self,
        client: httpx.AsyncClient,
        gateway_url: str,
        nats: NatsServer,
        store_urls: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(client)
        self.gateway_url = gateway_url
        self.nats = nats
        # module -> its store URL, for the stores the split keeps in PostgreSQL (users,
        # payments); a test may read the processor's ledger there, as the bank's side.
        self.store_urls = dict(store_urls or {})
        self.processes: dict[str, Running] = {}
        self._proof = GatewayProof(SECRET)
        self.admin_id = ADMIN_ID
        self.data_dir: Path | None = None  # where the processes keep their files
        self.env: dict[str, str] = {}  # the environment they were started with

    def module_processes(self) -> list[Running]:
        return [p for name, p in self.processes.items() if name != "gateway"]

    def replicas(self, module: str) -> list[Running]:
        """The live processes of one module: "payments" alone, or "payments.1", "payments.2"…"""
        return [p for name, p in self.processes.items() if name.partition(".")[0] == module]

    @asynccontextmanager
    async def driven_from_here(self) -> AsyncIterator[Split]:
        """The same processes, driven by a new client on the running event loop: for callers
        with a loop of their own (a hypothesis state machine), since an httpx client belongs
        to the loop it was opened on."""
        async with httpx.AsyncClient(
            base_url=self.gateway_url, headers=dict(self.client.headers), timeout=30
        ) as client:
            here = Split(client, self.gateway_url, self.nats, self.store_urls)
            here.processes = self.processes  # the same processes: a kill is seen by both
            yield here

    def kill(self, name: str) -> None:
        """SIGKILL one process (e.g. "payments.2"): no goodbye, no withdrawal."""
        running = self.processes.pop(name)
        running.process.send_signal(signal.SIGKILL)
        running.process.wait(STOP_SECONDS)
        running.log.close()

    async def restart(self, name: str, *, python_module: str = "app") -> Running:
        """Stop one module process and start it again with the same arguments, port, data
        dir and environment, as `python -m <python_module>`: an upgrade, or a test-only
        variant of the app standing for older code. Returns once it answers."""
        assert self.data_dir is not None, "restart needs a split started by split_system"
        old = self.processes.pop(name)
        _stop(old)
        argv = list(old.child.argv)
        argv[argv.index("-m") + 1] = python_module
        running = _start(replace(old.child, argv=argv), self.data_dir, self.env)
        self.processes[name] = running
        deadline = time.monotonic() + READY_SECONDS
        while True:
            if running.process.poll() is not None:
                raise AssertionError(f"{name} exited:\n{running.log_tail()}")
            try:
                await self.bus_state(running)
                return running
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                await anyio.sleep(0.1)

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

    async def handled(self, event_type: str, consumer: str) -> dict[str, int]:
        """How many events of a type each live process of the consumer handled, by name."""
        return {
            running.child.name: handled_count(await self.bus_state(running), event_type, consumer)
            for running in self.replicas(consumer)
        }

    async def dead_letters(self) -> dict[str, int]:
        """The dead letters each live module process holds, by name (none: all zero)."""
        return {
            running.child.name: int((await self.bus_state(running))["dead_letters"])
            for running in self.module_processes()
        }

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


def handled_count(state: Mapping[str, Any], event_type: str, consumer: str) -> int:
    """From one process's /api/admin/bus: how many events of the type the consumer handled
    (a redelivered one counts again, even when its inbox made it change nothing)."""
    return sum(
        int(count["count"])
        for count in state["counts"]
        if (count["type"], count["consumer"], count["outcome"]) == (event_type, consumer, "handled")
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


ADMIN_ID = "test-admin"
ADMIN_EMAIL = "test-admin@seams.test"
ADMIN_PASSWORD = "split admin password"


async def store_admin(users_db_url: str) -> None:
    """The driver's admin, written straight into the users store before the split starts
    (the gateway checks every token against it): it logs in like anyone."""
    store = UsersStore(users_db_url)
    await store.open()
    try:
        admin, _registered = User.register(
            user_id=ADMIN_ID,
            name="Test admin",
            email=ADMIN_EMAIL,
            password_hash=make_hasher("argon2id-fast").hash(ADMIN_PASSWORD),
            role="admin",
            now=utcnow(),
            key=new_key(),
        )
        async with store.unit_of_work(HandedOff("users")) as work:
            await store.insert(work, admin)
    finally:
        await store.close()


async def log_in_admin(client: httpx.AsyncClient) -> None:
    answer = await client.post(
        "/api/auth/token", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    )
    assert answer.status_code == 200, answer.text
    client.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"


def admin_headers() -> dict[str, str]:
    """An admin's bearer token signed with the shared secret, never issued by the users
    module: what a direct call that skips the gateway carries (a module process refuses it,
    whatever it says)."""
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
    require_marks("services", "split")
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
        await store_admin(databases["users"])
        client = await stack.enter_async_context(
            httpx.AsyncClient(base_url=the_plan.gateway_url, timeout=30)
        )
        split = Split(client, the_plan.gateway_url, nats, databases)
        full_env = {**SPLIT_ENV, **overrides, **env}
        split.data_dir, split.env = data_dir, full_env
        try:
            for child in the_plan.children:
                split.processes[child.name] = _start(child, data_dir, full_env)
            await _wait_ready(split)
            await log_in_admin(client)
            yield split
        finally:
            for running in list(split.processes.values()):
                _stop(running)


@contextmanager
def split_system_in_background(
    tmp_path: Path, *, replicas: Mapping[str, int] | None = None, **env: str
) -> Iterator[Split]:
    """`split_system`, for synchronous callers (a module-scoped fixture for hypothesis state
    machines, which run event loops of their own): it is started, kept and stopped by a
    portal thread with its own loop. Drive it with `Split.driven_from_here()`."""
    with (
        start_blocking_portal(backend="asyncio") as portal,
        portal.wrap_async_context_manager(
            split_system(tmp_path, replicas=replicas, **env)
        ) as split,
    ):
        yield split


def free_gateway_port() -> int:
    """A port with the next 16 free too: the plan puts module processes on port+1, +2, …

    Below the kernel's ephemeral range: a port there is never handed to an outgoing
    connection (of this run's clients, brokers and databases, or anyone else's tests on the
    machine) between this check and the module process binding it."""
    first_ephemeral = _first_ephemeral_port()
    for _ in range(200):
        base = random.randrange(max(first_ephemeral - 12_000, 1_024), first_ephemeral - 17)
        if all(_port_free(base + offset) for offset in range(17)):
            return base
    raise AssertionError("no run of 17 free ports on loopback")


def _first_ephemeral_port() -> int:
    try:
        low = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0]
        return max(int(low), 10_000)
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def _port_free(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
