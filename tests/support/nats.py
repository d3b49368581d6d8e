"""A private nats-server for tests, a link to it a test can cut, and a bounded wait until the
bus over it is quiet.

`nats_server(data_dir)` starts `nats-server -js` on a free loopback port with its own store
directory, waits (bounded) until it answers, and kills it afterwards; `restart()` brings it
back on the same port and data dir, as a broker that went away and came back. Without the
binary the tests are skipped with the reason, unless SEAMS_REQUIRE_SERVICES=1 (CI), which
fails them instead. The server never touches the system one on 127.0.0.1:4222.
`broker_link(url)` relays clients to the broker over TCP until `cut()`: to the broker they
are gone as when their process dies, with no goodbye.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import anyio
from anyio.abc import ByteReceiveStream, ByteSendStream, SocketAttribute, SocketStream

from app.bus import Bus
from app.split.cluster import free_port
from app.split.nats_transport import NatsTransport
from tests.support.tiers import require_marks, skip_or_fail

READY_SECONDS = 10.0
STOP_SECONDS = 5.0
SETTLE_SECONDS = 20.0
POLL_SECONDS = 0.01


def nats_server_binary() -> str | None:
    """Where nats-server is, or None; only a test marked `services` may look for it."""
    require_marks("services")
    configured = os.environ.get("SEAMS_NATS_SERVER")
    if configured:
        return configured if Path(configured).exists() else None
    return shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None
    )


@dataclass
class NatsServer:
    binary: str
    data_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "nats-server.log"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        command = [self.binary, "-js", "-a", "127.0.0.1", "-p", str(self.port)]
        command += ["-sd", str(self.data_dir / "store")]
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )
        self._wait_ready()

    def kill(self) -> None:
        """SIGKILL: the broker vanishes without a word, as when its machine dies."""
        self._end(kill=True)

    def stop(self) -> None:
        self._end(kill=False)

    def restart(self) -> None:
        """Stop, then start again on the same port and data dir (its streams survive)."""
        self.stop()
        self.start()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError as error:
            return f"(no log: {error})"

    def _end(self, *, kill: bool) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill() if kill else process.terminate()
            try:
                process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_SECONDS)
        if self._log is not None:
            self._log.close()
            self._log = None

    def _wait_ready(self) -> None:
        """Until the server greets a client with its INFO line (JetStream is up by then)."""
        deadline = time.monotonic() + READY_SECONDS
        last = "no answer yet"
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(
                    f"nats-server exited with {self.process.returncode}; log:\n{self.log_tail()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as probe:
                    if probe.recv(4096).startswith(b"INFO"):
                        return
            except OSError as error:
                last = repr(error)
            time.sleep(0.02)
        self.kill()
        raise AssertionError(
            f"nats-server not ready on {self.port} after {READY_SECONDS}s (last: {last}); "
            f"log:\n{self.log_tail()}"
        )


@contextmanager
def nats_server(data_dir: Path) -> Iterator[NatsServer]:
    """A private JetStream server, started and ready; killed when the block ends."""
    binary = nats_server_binary()
    if binary is None:
        skip_or_fail(
            "no nats-server binary (apt-get install nats-server, or SEAMS_NATS_SERVER=path)"
        )
        raise AssertionError("unreachable")  # skip_or_fail raises
    server = NatsServer(binary, data_dir)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def private_names() -> dict[str, str]:
    """A stream and subject prefix no other test uses, so tests can share one server."""
    tag = uuid.uuid4().hex[:10]
    return {"stream": f"T{tag}", "subject_prefix": f"t{tag}.events"}


def nats_transport(url: str, **options: Any) -> NatsTransport:
    """A transport on its own stream, with waits short enough for tests."""
    defaults: dict[str, Any] = {
        **private_names(),
        "fetch_seconds": 1.0,
        "reconnect_wait_seconds": 0.1,
        "stop_grace_seconds": 1.0,
    }
    return NatsTransport(url, **{**defaults, **options})


async def settle(bus: Bus, transport: NatsTransport, timeout: float = SETTLE_SECONDS) -> None:
    """Wait, bounded, until everything published has been handled and acked: the bus has
    nothing under way, the broker holds nothing unacked or undelivered for the consumers
    bound here, and nothing was taken from the broker while we looked."""
    deadline = time.monotonic() + timeout
    last = "never looked"
    while time.monotonic() < deadline:
        await bus.wait_quiet(max(deadline - time.monotonic(), 0.001))
        taken = transport.received
        backlog = await transport.backlog()
        if (
            backlog == 0
            and transport.in_flight == 0
            and bus.activity.busy == 0
            and transport.received == taken
        ):
            return
        last = f"broker backlog {backlog}, {transport.in_flight} in flight"
        await anyio.sleep(POLL_SECONDS)
    raise TimeoutError(f"not settled after {timeout}s: {last}")


@dataclass
class BrokerLink:
    """A TCP relay between clients and the broker. `cut()` drops every relayed connection
    and refuses new ones: to the broker, the clients behind it are gone as when their
    process dies (nothing acked, nak'ed or withdrawn). `mend()` lets them reconnect."""

    broker_port: int
    port: int
    severed: bool = False
    relays: set[anyio.CancelScope] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def cut(self) -> None:
        self.severed = True
        for relay in self.relays:
            relay.cancel()

    def mend(self) -> None:
        self.severed = False

    async def relay(self, client: SocketStream) -> None:
        async with client:
            if self.severed:
                return
            with anyio.CancelScope() as relay:
                self.relays.add(relay)
                try:
                    broker = await anyio.connect_tcp("127.0.0.1", self.broker_port)
                    async with broker, anyio.create_task_group() as pipes:
                        pipes.start_soon(_pipe, client, broker, pipes.cancel_scope)
                        pipes.start_soon(_pipe, broker, client, pipes.cancel_scope)
                finally:
                    self.relays.discard(relay)


async def _pipe(source: ByteReceiveStream, sink: ByteSendStream, both: anyio.CancelScope) -> None:
    """Copy one direction until either side closes; then end both."""
    try:
        async for chunk in source:
            await sink.send(chunk)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        pass
    both.cancel()


@asynccontextmanager
async def broker_link(broker_url: str) -> AsyncIterator[BrokerLink]:
    """A cuttable link to the broker at `broker_url`: connect clients to its `url`."""
    broker_port = int(broker_url.rsplit(":", 1)[1])
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    async with listener, anyio.create_task_group() as serving:
        link = BrokerLink(broker_port, listener.extra(SocketAttribute.local_port))
        serving.start_soon(listener.serve, link.relay)
        yield link
        serving.cancel_scope.cancel()
