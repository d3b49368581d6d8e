"""The outbox relay: publishes what a module committed to its outbox, marks it delivered.

A module hands its envelopes over right after the commit that stored them (the fast path);
on start the relay also picks up whatever a previous process left undelivered, and a slow
sweep catches anything else. Delivery is marked only after the transport answers for it.

When the transport cannot publish (a broker away), each envelope is retried with backoff and
stays in the outbox meanwhile; the relay says so once per outage, not once per envelope and
try, and once more when publishing works again (docs/decisions/0032-broker-loss-and-not-yet.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

from app.bus.activity import Activity
from app.bus.context import current_request_id
from app.bus.envelope import Envelope
from app.bus.metrics import OUTBOX_BACKLOG, PUBLISHED
from app.bus.retry import Progress, RetryPolicy
from app.bus.transport import Transport
from app.bus.watch import Watch
from app.kernel.errors import StoreUnavailable
from app.kernel.outage import Outage

log = logging.getLogger("app.bus.outbox")


class OutboxSource(Protocol):
    async def pending(self, limit: int) -> list[Envelope]:
        """Undelivered envelopes, oldest first."""
        ...

    async def mark_delivered(self, envelopes: Sequence[Envelope]) -> None: ...


class OutboxRelay:
    def __init__(
        self,
        owner: str,
        source: OutboxSource,
        transport: Transport,
        activity: Activity,
        *,
        sweep_seconds: float = 5.0,
        batch: int = 500,
        retry: RetryPolicy | None = None,
        watch: Watch | None = None,
    ) -> None:
        self.owner = owner
        self._source = source
        self._transport = transport
        self._activity = activity
        self._sweep_seconds = sweep_seconds
        self._batch = batch
        self._retry = retry or RetryPolicy(max_attempts=1_000_000, base_delay=0.05, max_delay=2.0)
        self._in_flight: set[str] = set()
        self._delivered: list[Envelope] = []
        self._wake = asyncio.Event()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._failing = 0  # envelopes whose last publish failed (an outage while > 0)
        self._broker_away = Outage(log)  # publishing fails (said by its first envelope)
        self._store_away = Outage(log)  # its database is away (StoreUnavailable)
        self._waited: set[str] = set()  # envelopes whose marking met it meanwhile
        self._published = Progress()  # one that gets through wakes those waiting to retry
        self._backlog = OUTBOX_BACKLOG.labels(owner)
        self._watch = watch or Watch()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def start(self) -> None:
        self._stopping = False
        self._tasks = [
            asyncio.create_task(self._flush_forever(), name=f"outbox-flush:{self.owner}"),
            asyncio.create_task(self._sweep_forever(), name=f"outbox-sweep:{self.owner}"),
        ]
        await self.sweep()

    async def stop(self) -> None:
        """Stop publishing; what is not yet marked delivered stays in the outbox for next time."""
        self._stopping = True
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._flush(tries=3)
        # What is still in flight stays in the outbox for the next start, not in this relay.
        self._backlog.dec(len(self._in_flight))
        self._in_flight.clear()

    def hand_off(self, envelopes: Sequence[Envelope]) -> None:
        for envelope in envelopes:
            if envelope.id in self._in_flight or self._stopping:
                continue
            self._in_flight.add(envelope.id)
            self._activity.begin()  # ended by the flush that marks it delivered
            self._backlog.inc()
            self._activity.spawn(self._publish(envelope), name=f"publish:{envelope.id}")

    async def sweep(self) -> None:
        """Hand off what the store holds undelivered (after a restart, or missed)."""
        while not self._stopping:
            pending = await self._source.pending(self._batch + len(self._in_flight))
            fresh = [envelope for envelope in pending if envelope.id not in self._in_flight]
            if not fresh:
                return
            self.hand_off(fresh)
            if len(pending) < self._batch + len(self._in_flight):
                return

    async def _publish(self, envelope: Envelope) -> None:
        # A task of its own: its log lines carry the envelope's flow, even from a sweep.
        current_request_id.set(envelope.correlation_id)
        attempt = 0
        failed = False
        while not self._stopping:
            attempt += 1
            if attempt == 1:
                self._watch.published(envelope)
            try:
                await self._transport.publish(envelope)
            except Exception as error:  # the broker may be away: keep it, retry later
                if not failed:
                    failed = True
                    self._failed(envelope, error)
                # The broker back for one is back for all: no envelope waits out its backoff.
                await self._published.after(self._retry.delay(min(attempt, 10)))
            else:
                if failed:
                    self._recovered()
                if self._failing:
                    self._published.moved()
                PUBLISHED.labels(envelope.type, self.owner).inc()
                self._delivered.append(envelope)
                self._wake.set()
                return
        # Stopped before delivery: it stays in the outbox; this relay no longer owes it.
        if failed:
            self._failing -= 1
            if self._failing == 0:
                self._broker_away.forget()
        self._in_flight.discard(envelope.id)
        self._backlog.dec()
        self._activity.end()

    def _failed(self, envelope: Envelope, error: Exception) -> None:
        """The first failure of an outage is said (a broker away is said by the transport:
        INFO here), the rest at DEBUG."""
        self._failing += 1
        said = self._broker_away.begin(
            "publishing %s's events failed (%r): they wait in its outbox, retried with backoff",
            self.owner,
            error,
            level=logging.INFO if isinstance(error, ConnectionError) else logging.WARNING,
        )
        if not said:
            log.debug("publishing %s %s failed: %r", envelope.type, envelope.id, error)

    def _recovered(self) -> None:
        self._failing -= 1
        if self._failing == 0:
            self._broker_away.end("publishing %s's events works again", self.owner)

    async def _flush_forever(self) -> None:
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            await self._flush()

    async def _flush(self, *, tries: int | None = None) -> None:
        """Mark delivered what was delivered; retry failures (forever while running, `tries`
        times when stopping: what stays unmarked is only delivered again, harmlessly)."""
        failures = 0
        while self._delivered:
            batch, self._delivered = self._delivered, []
            try:
                await self._source.mark_delivered(batch)
            except Exception as error:  # a redelivery is harmless (inboxes), a loss is not
                if not self._store_away_at(error, batch):
                    log.warning("marking %d envelopes delivered failed: %r", len(batch), error)
                self._delivered.extend(batch)
                failures += 1
                if tries is not None and failures >= tries:
                    return
                await asyncio.sleep(0.1)
                continue
            self._store_answers()
            for envelope in batch:
                self._in_flight.discard(envelope.id)
                self._backlog.dec()
                self._activity.end()

    def _store_away_at(self, error: Exception, unmarked: Sequence[Envelope] = ()) -> bool:
        """Whether `error` is the module's database away (StoreUnavailable): said once for
        the outage, not at every retry of marking or sweeping meanwhile (0033; the database
        says it too, app/kernel/sql.py). Other errors are the caller's to say, each time."""
        if not isinstance(error, StoreUnavailable):
            return False
        self._waited.update(e.id for e in unmarked)
        self._store_away.begin(
            "the outbox of %s cannot reach its database (%r): marking delivered and sweeping "
            "wait until it is back",
            self.owner,
            error,
            still="the outbox of %s still cannot reach its database: %r",
        )
        return True

    def _store_answers(self) -> None:
        if self._store_away.end(
            "the outbox of %s reaches its database again: %d envelopes waited to be "
            "marked delivered",
            self.owner,
            len(self._waited),
        ):
            self._waited.clear()

    async def _sweep_forever(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self._sweep_seconds)
            try:
                await self.sweep()
            except Exception as error:
                if not self._store_away_at(error):
                    log.warning("outbox sweep of %s failed: %r", self.owner, error)
            else:
                self._store_answers()
