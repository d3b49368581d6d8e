"""The watch across the processes of the split mode: each module process reports what its bus
did to the gateway process, whose stream and journeys then show every process's events.

A module process sends its observations in small batches on core NATS (not JetStream:
nothing is stored, nothing acknowledged), on `seams.watch.<process>`. Sending never makes
the bus wait: observations queue in a bounded buffer (the oldest dropped when it is full),
a background task publishes them, and while the broker is away they are dropped. The
gateway listens on `seams.watch.>` and records each one in its own watch, where it keeps
the process that made it. A teaching aid, like the watch itself: lossy on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import deque

import msgspec
import nats.errors
from nats.aio.msg import Msg

from app.bus import Observation, Watch
from app.kernel.tasks import cancel_and_wait
from app.split.nats import BrokerConnection

log = logging.getLogger("app.split.watch")

SUBJECT = "seams.watch"
BATCH = 500  # observations per message (well under NATS's 1 MiB payload limit)
GATHER_SECONDS = 0.02  # what happens within this is sent together

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(list[Observation])


def subject_of(process: str) -> str:
    """seams.watch.<process>, with what a NATS subject token cannot hold replaced."""
    token = "".join("_" if c in ". *>" else c for c in process) or "unnamed"
    return f"{SUBJECT}.{token}"


class WatchReporter:
    """In a module process: sends what its watch records to the gateway process."""

    def __init__(self, nats_url: str, watch: Watch, *, buffer: int = 10_000) -> None:
        self.subject = subject_of(watch.process)
        self.dropped = 0  # while the broker was away, or the buffer full
        self._broker = BrokerConnection(nats_url, f"seams-watch-{os.getpid()}")
        self._pending: deque[Observation] = deque()
        self._buffer = buffer
        self._wake = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        watch.listen(self._offer)

    def _offer(self, observation: Observation) -> None:
        """On the bus's hot path: a deque append, never a wait."""
        pending = self._pending
        if len(pending) >= self._buffer:
            pending.popleft()
            self.dropped += 1
        pending.append(observation)
        if not self._wake.is_set():
            self._wake.set()

    async def start(self) -> None:
        await self._broker.open()
        self._sender = asyncio.create_task(self._send_forever(), name="watch-reporter")

    async def _send_forever(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(GATHER_SECONDS)
            self._wake.clear()
            await self._send()

    async def _send(self) -> None:
        client = self._broker.client
        while self._pending:
            batch = [self._pending.popleft() for _ in range(min(BATCH, len(self._pending)))]
            if client is None or not client.is_connected:
                self.dropped += len(batch)  # the broker is away: the page misses these
                continue
            try:
                await client.publish(self.subject, _encoder.encode(batch))
            except nats.errors.Error as error:
                self.dropped += len(batch)
                log.debug("watch report of %d observations dropped: %r", len(batch), error)

    async def stop(self) -> None:
        await cancel_and_wait(self._sender)
        with contextlib.suppress(nats.errors.Error):
            await self._send()  # what the last moments recorded, if the broker is there
        await self._broker.close(drain=True)


class WatchListener:
    """In the gateway process: records in its watch what every module process reports."""

    def __init__(self, nats_url: str, watch: Watch) -> None:
        self._watch = watch
        self._broker = BrokerConnection(nats_url, f"seams-gateway-watch-{os.getpid()}")

    async def start(self) -> None:
        connection = await self._broker.open()
        await connection.subscribe(f"{SUBJECT}.>", cb=self._heard)

    async def _heard(self, message: Msg) -> None:
        try:
            batch = _decoder.decode(message.data)
        except msgspec.DecodeError as error:
            log.warning("ignored a malformed watch report on %s: %r", message.subject, error)
            return
        for observation in batch:
            self._watch.record(observation)

    async def stop(self) -> None:
        await self._broker.close()
