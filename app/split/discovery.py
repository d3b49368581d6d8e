"""Which module instances are alive, and where: announced on NATS, never a static list.

Each module process puts one entry in a JetStream KeyValue bucket, `<modules>.<instance>` →
the modules it serves and its base URL, and puts it again every `interval` seconds.
The bucket keeps entries for `ttl` seconds (NATS 2.9 has a TTL per bucket, not per key),
and a directory treats an entry it has not seen refreshed within `ttl` as gone, so an
instance that dies without a word drops out within `ttl` seconds; one that stops cleanly
deletes its entry and drops out at once.

The bucket is kept in the broker's memory, so a broker that restarts comes back without
it: announcers make it again at their next refresh, and the directory watches it afresh
after every reconnect.

While the broker is away nobody can announce, so the directory does not judge liveness by
the announcements: it keeps the instances it knew (one that refuses a connection is still
forgotten), and gives each a fresh `ttl` when the broker is back. Requests that need no
broker keep being served (docs/decisions/0032-broker-loss-and-not-yet.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from urllib.parse import urlsplit

import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from app.kernel.tasks import cancel_and_wait
from app.split.nats import BrokerConnection, presence

log = logging.getLogger("app.split.discovery")

BUCKET = "seams_instances"
INTERVAL_SECONDS = 1.0
TTL_SECONDS = 4.0


class Instance(msgspec.Struct, frozen=True):
    modules: tuple[str, ...]  # the modules this process serves
    instance: str
    url: str  # base URL the gateway forwards to, e.g. http://127.0.0.1:8101
    pid: int

    @property
    def key(self) -> str:
        return f"{'-'.join(self.modules)}.{self.instance}"


async def _bucket(connection: Client, ttl: float, replicas: int = 1) -> KeyValue:
    """The bucket, made if missing; on a JetStream cluster kept on `replicas` servers, on
    file there, since a replica in memory comes back empty with its restarted server and
    cannot vouch for the others (APP_NATS_REPLICAS, docs/decisions/0033)."""
    js = connection.jetstream()
    try:
        return await js.key_value(BUCKET)
    except nats.js.errors.BucketNotFoundError:
        storage = StorageType.FILE if replicas > 1 else StorageType.MEMORY
        config = KeyValueConfig(
            bucket=BUCKET, ttl=ttl, history=1, storage=storage, replicas=replicas
        )
        return await js.create_key_value(config=config)


class Announcer:
    """A module process saying 'here I am' until it stops."""

    def __init__(
        self,
        nats_url: str,
        instance: Instance,
        *,
        interval: float = INTERVAL_SECONDS,
        ttl: float = TTL_SECONDS,
        wait_for_listener: bool = False,
        replicas: int = 1,
    ) -> None:
        self.nats_url = nats_url
        self.instance = instance
        self._interval = interval
        self._ttl = ttl
        self._replicas = replicas
        self._wait_for_listener = wait_for_listener
        self._broker = BrokerConnection(nats_url, f"seams-{instance.key}")
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._broker.connected

    async def start(self) -> None:
        """Connect and announce; with wait_for_listener, the first announcement waits until
        the instance's URL accepts connections (the server binds after the app started)."""
        connection = await self._broker.open()
        bucket = await _bucket(connection, self._ttl, self._replicas)
        self._task = asyncio.create_task(
            self._announce_forever(connection, bucket), name="discovery"
        )

    async def _announce_forever(self, connection: Client, bucket: KeyValue | None) -> None:
        if self._wait_for_listener:
            await _until_listening(self.instance.url)
        value = msgspec.json.encode(self.instance)
        announced = False
        while True:
            try:
                if bucket is None:
                    bucket = await _bucket(connection, self._ttl, self._replicas)
                await bucket.put(self.instance.key, value)
            except (TimeoutError, nats.errors.Error) as error:
                # The broker may come back without the bucket (a restart): look it up, or
                # make it, again next time. Its absence is said once (BrokerPresence).
                away = presence(self.nats_url).away or not connection.is_connected
                log.log(
                    logging.DEBUG if away else logging.WARNING,
                    "could not refresh %s: %r",
                    self.instance.key,
                    error,
                )
                bucket = None
            else:
                if not announced:
                    log.info("announced %s at %s", self.instance.key, self.instance.url)
                    announced = True
            await asyncio.sleep(self._interval)

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        connection = self._broker.client
        if connection is None:
            return
        if connection.is_connected:  # the broker away: the entry lapses by itself
            await self._withdraw(connection)
        await self._broker.close()

    async def _withdraw(self, connection: Client) -> None:
        try:
            bucket = await _bucket(connection, self._ttl, self._replicas)
            await bucket.delete(self.instance.key)
        except (TimeoutError, nats.errors.Error) as error:
            log.warning("could not withdraw %s (it lapses by itself): %r", self.instance.key, error)


async def _until_listening(url: str) -> None:
    parsed = urlsplit(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
    while True:
        try:
            _reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return


class Directory:
    """The gateway's view of live instances, kept current by watching the bucket."""

    def __init__(self, nats_url: str, *, ttl: float = TTL_SECONDS, replicas: int = 1) -> None:
        self.nats_url = nats_url
        self._ttl = ttl
        self._replicas = replicas
        self._seen: dict[str, tuple[Instance, float]] = {}  # key -> (instance, last seen)
        self._turns: dict[str, itertools.count[int]] = {}
        self._broker = BrokerConnection(
            nats_url, f"seams-gateway-{os.getpid()}", reconnected=self._reconnected
        )
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._broker.connected

    async def start(self) -> None:
        connection = await self._broker.open()
        await _bucket(connection, self._ttl, self._replicas)  # fail the start if the broker cannot
        self._task = asyncio.create_task(self._watch_forever(connection), name="directory")

    async def _reconnected(self) -> None:
        """The broker may have restarted, and lost the bucket and the watch's consumer with
        it (a watch then waits forever without a word): watch afresh."""
        connection = self._broker.client
        # Nobody could announce while the broker was away: a fresh ttl for each.
        now = time.monotonic()
        self._seen = {key: (instance, now) for key, (instance, _) in self._seen.items()}
        if self._task is not None and connection is not None:
            log.info("reconnected to NATS: watching %s afresh", BUCKET)
            self._task.cancel()
            self._task = asyncio.create_task(self._watch_forever(connection), name="directory")

    async def _watch_forever(self, connection: Client) -> None:
        while True:
            watcher = None
            try:
                bucket = await _bucket(connection, self._ttl, self._replicas)
                watcher = await bucket.watchall()
                async for entry in watcher:
                    if entry is None:  # the end of the initial values
                        continue
                    self._note(entry.key, entry.value, entry.operation)
                await asyncio.sleep(0.5)  # the watcher ended (a reconnect): watch again
            except asyncio.CancelledError:
                raise
            except Exception as error:  # reconnects: watch again from the current values
                log.log(
                    logging.DEBUG if presence(self.nats_url).away else logging.WARNING,
                    "watching %s failed, watching again: %r",
                    BUCKET,
                    error,
                )
                await asyncio.sleep(0.5)
            finally:
                if watcher is not None:
                    with contextlib.suppress(Exception):
                        await watcher.stop()  # type: ignore[no-untyped-call]

    def _note(self, key: str, value: bytes | None, operation: str | None) -> None:
        if operation in ("DEL", "PURGE") or not value:
            self._seen.pop(key, None)
            return
        try:
            instance = msgspec.json.decode(value, type=Instance)
        except msgspec.ValidationError as error:
            log.warning("ignoring a malformed announcement under %s: %s", key, error)
            return
        self._seen[key] = (instance, time.monotonic())

    def live(self, module: str | None = None) -> list[Instance]:
        """Instances announced within `ttl`; while the broker is away, or no announcement
        gets through, every one known."""
        away = presence(self.nats_url).away or self._stalled()
        horizon = float("-inf") if away else time.monotonic() - self._ttl
        return [
            instance
            for instance, seen in self._seen.values()
            if seen >= horizon and (module is None or module in instance.modules)
        ]

    def _stalled(self) -> bool:
        """Every instance silent past the ttl at once: the announcements are not getting
        through (a broker cluster electing the bucket's leader, docs/decisions/0033), not
        every process dead; a dead one still refuses its connection and is forgotten. One
        instance alone says nothing either way: it lapses, as any instance that falls silent."""
        if len(self._seen) < 2:
            return False
        newest = max(seen for _, seen in self._seen.values())
        return time.monotonic() - newest > self._ttl

    def pick(self, module: str) -> Instance | None:
        """The next live instance of the module, round robin; None when there is none."""
        candidates = sorted(self.live(module), key=lambda instance: instance.instance)
        if not candidates:
            return None
        turn = next(self._turns.setdefault(module, itertools.count()))
        return candidates[turn % len(candidates)]

    def forget(self, instance: Instance) -> None:
        """An instance that refused a connection is gone until it announces itself again."""
        self._seen.pop(instance.key, None)

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        await self._broker.close()
