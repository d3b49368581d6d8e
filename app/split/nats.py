"""The one way every part of the split mode connects to NATS: named, reconnecting forever
(a broker that restarts is waited for), and closed without a word when it is already gone.

A broker that goes away is a state, not a crash (docs/decisions/0032-broker-loss-and-not-yet.md):
every connection of a process reports to that process's BrokerPresence, which says it ONCE
(one warning when the broker goes, one line when it is back, with how long it was away);
what each part retries meanwhile is logged at DEBUG only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
from collections.abc import Awaitable, Callable
from types import FrameType
from urllib.parse import urlsplit

import nats.errors
from nats.aio.client import Client

from app.kernel.outage import Outage
from app.kernel.settings import servers_of

Callback = Callable[[], Awaitable[None]]
ErrorCallback = Callable[[Exception], Awaitable[None]]

log = logging.getLogger("app.split.nats")

RECONNECT_WAIT_SECONDS = 0.5
NATS_PORT = 4222  # a server URL without a port
STARTUP_NAP_LONGEST_SECONDS = 2.0


class BrokerPresence:
    """Whether this process reaches the broker at `url`, said once per change: away while
    any of its open connections is reconnecting."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._outage = Outage(log)
        self._reconnecting: set[int] = set()  # ids of this process's connections
        self._back = asyncio.Event()
        self._back.set()

    @property
    def away(self) -> bool:
        return bool(self._reconnecting)

    def lost(self, connection: Client, why: str) -> None:
        if not self._reconnecting:
            self._back = asyncio.Event()  # of the loop that runs now
        self._reconnecting.add(id(connection))
        self._outage.begin(
            "the broker NATS %s is gone (%s): retrying quietly until it is back; events "
            "wait in the outboxes and /ready answers 503 meanwhile",
            self.url,
            why,
        )

    def returned(self, connection: Client) -> None:
        if self._ended(connection):
            self._outage.end(
                "the broker NATS %s is back after %.1f s; resuming", self.url, self._outage.lasted
            )

    def closed(self, connection: Client) -> None:
        """A connection of ours closed (a part stopped): it no longer says anything."""
        if self._ended(connection):
            self._outage.forget()

    def _ended(self, connection: Client) -> bool:
        """Whether this was the last connection away (the outage is over for this process)."""
        if id(connection) not in self._reconnecting:
            return False
        self._reconnecting.discard(id(connection))
        if self._reconnecting:
            return False
        self._back.set()
        return True

    async def until_back(self) -> None:
        await self._back.wait()


_presences: dict[str, BrokerPresence] = {}


def presence(url: str) -> BrokerPresence:
    """This process's view of the broker at `url`, shared by all its connections."""
    found = _presences.get(url)
    if found is None:
        found = _presences[url] = BrokerPresence(url)
    return found


def _reporting(
    client: Client,
    url: str,
    reconnected: Callback | None,
    disconnected: Callback | None,
    error: ErrorCallback | None,
) -> tuple[Callback, Callback, ErrorCallback, Callback]:
    """The callbacks a connection is given: the presence first, then the part's own."""
    broker = presence(url)

    async def on_reconnected() -> None:
        broker.returned(client)
        if reconnected is not None:
            await reconnected()

    async def on_disconnected() -> None:
        if client.is_reconnecting:  # not a close of ours
            broker.lost(client, "disconnected")
        if disconnected is not None:
            await disconnected()

    async def on_error(failure: Exception) -> None:
        # While the broker is away every reconnect attempt fails: said once by `lost`.
        if broker.away or isinstance(failure, OSError | nats.errors.Error):
            log.debug("NATS %s: %r", url, failure)
        else:
            log.warning("NATS %s: %r", url, failure)
        if error is not None:
            await error(failure)

    async def on_closed() -> None:
        broker.closed(client)

    return on_reconnected, on_disconnected, on_error, on_closed


async def connect(
    url: str,
    name: str,
    *,
    timeout: float | None = None,
    reconnect_wait: float = RECONNECT_WAIT_SECONDS,
    reconnected: Callback | None = None,
    disconnected: Callback | None = None,
    error: ErrorCallback | None = None,
) -> Client:
    """A connection to the broker at `url` (a JetStream cluster: its servers' URLs,
    comma-separated, tried in turn); one that fails to open (or within `timeout` seconds) is
    closed, so that no reconnect loop outlives the failure."""
    client = Client()
    on_reconnected, on_disconnected, on_error, on_closed = _reporting(
        client, url, reconnected, disconnected, error
    )
    try:
        await asyncio.wait_for(
            client.connect(
                servers_of(url),
                name=name,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=reconnect_wait,  # type: ignore[arg-type]
                connect_timeout=2,
                reconnected_cb=on_reconnected,
                disconnected_cb=on_disconnected,
                error_cb=on_error,
                closed_cb=on_closed,
            ),
            timeout,
        )
    except BaseException:
        with contextlib.suppress(Exception):
            await client.close()
        raise
    return client


class BrokerConnection:
    """The connection one part (an announcer, a directory, a credentials answerer…) opens
    when it starts and closes when it stops."""

    def __init__(self, url: str, name: str, *, reconnected: Callback | None = None) -> None:
        self.url = url
        self.name = name
        self._reconnected = reconnected
        self.client: Client | None = None

    @property
    def connected(self) -> bool:
        return self.client is not None and self.client.is_connected

    async def open(self) -> Client:
        self.client = await connect(self.url, self.name, reconnected=self._reconnected)
        return self.client

    async def close(self, *, drain: bool = False) -> None:
        """Close (with `drain`, after what was received is handled and what was published
        is sent); nothing to do if it never opened."""
        client, self.client = self.client, None
        if client is not None:
            await close_quietly(client, drain=drain)


async def close_quietly(client: Client, *, drain: bool = False) -> None:
    """Close a connection whatever the broker's state: with the broker away there is nothing
    to drain, and nats-py's close may fail writing what it had buffered to the dead socket
    (RuntimeError from the event loop's transport), which must not fail a clean stop."""
    if not client.is_connected:
        drain = False
    try:
        await (client.drain() if drain else client.close())
    except Exception as error:  # what was buffered for the broker is lost; it is redelivered
        log.debug("closing the NATS connection %s: %r", client.connected_url, error)


def wait_for_broker(
    url: str, *, longest_nap: float = STARTUP_NAP_LONGEST_SECONDS, connect_seconds: float = 1.0
) -> bool:
    """Before a process of the split starts: wait until one of the broker's servers accepts a
    connection, so that a process started while the broker is down waits for it instead of
    failing to start (docs/decisions/0041-starting-without-the-broker.md). Said once when it
    waits, once when the broker is there. False when SIGTERM or SIGINT came meanwhile: the
    process then ends having started nothing (status 0, a clean stop)."""
    stopping = threading.Event()

    def stop(_signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    in_main = threading.current_thread() is threading.main_thread()
    previous = (
        {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        if in_main
        else {}
    )
    outage = Outage(log)
    nap = 0.1
    try:
        while not stopping.is_set():
            if _greets(url, connect_seconds):
                outage.end("the broker NATS %s is there after %.1f s: starting", url, outage.lasted)
                return True
            outage.begin(
                "the broker NATS %s cannot be reached: this process starts once it can "
                "(SIGTERM or Ctrl-C stops it meanwhile)",
                url,
            )
            stopping.wait(nap)
            nap = min(longest_nap, nap * 2)
        log.info("stopped while waiting for the broker NATS %s: nothing was started", url)
        return False
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _greets(url: str, timeout: float) -> bool:
    """Whether one of the servers in `url` accepts a connection and greets it as a NATS
    server does (its INFO line: by then JetStream is up)."""
    for server in servers_of(url):
        parts = urlsplit(server)
        try:
            with socket.create_connection(
                (parts.hostname or "127.0.0.1", parts.port or NATS_PORT), timeout=timeout
            ) as probe:
                if probe.recv(4096).startswith(b"INFO"):
                    return True
        except OSError:
            continue
    return False
