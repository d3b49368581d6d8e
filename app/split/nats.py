"""The one way every part of the split mode connects to NATS: named, reconnecting forever
(a broker that restarts is waited for), and closed without a word when it is already gone."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import nats.errors
from nats.aio.client import Client

Callback = Callable[[], Awaitable[None]]
ErrorCallback = Callable[[Exception], Awaitable[None]]

RECONNECT_WAIT_SECONDS = 0.5


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
    try:
        await asyncio.wait_for(
            client.connect(
                servers_of(url),
                name=name,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=reconnect_wait,  # type: ignore[arg-type]
                connect_timeout=2,
                reconnected_cb=reconnected,
                disconnected_cb=disconnected,
                error_cb=error,
            ),
            timeout,
        )
    except BaseException:
        with contextlib.suppress(Exception):
            await client.close()
        raise
    return client


def servers_of(url: str) -> list[str]:
    """`nats://a:4222,nats://b:4222` → both URLs (docs/decisions/0033)."""
    return [server.strip() for server in url.split(",") if server.strip()]


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
            with contextlib.suppress(nats.errors.Error):
                await (client.drain() if drain else client.close())
