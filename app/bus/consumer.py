"""One consuming module: its handlers, per-aggregate lanes, retries and dead letters.

Events about one aggregate are handled one after another, in the order they arrived;
different aggregates are handled concurrently. A handler that keeps failing turns its
event into a dead letter, and later events of the same aggregate are parked behind it
(in the delivery store, so a restart keeps them) until it is replayed or discarded.

A payload is opened through the consumer's reading of it (its view, app/bus/contracts.py):
one of a version newer than the consumer accepts is parked, naming the version it needs, and
blocks its aggregate's later events behind it until an upgraded consumer starts
(docs/decisions/0027-tolerant-readers.md).

Each outcome is told to the watch (app/bus/watch.py) and, at INFO, logged in one line with
the flow's request id. A consumer can be paused (its lanes stop; what arrives queues) and its
handlers broken on purpose (every attempt fails): the faults a page switches on to show what
a real system sees.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from opentelemetry.trace import SpanKind

from app.bus.activity import Activity
from app.bus.context import flow_of
from app.bus.contracts import NewerVersion, Reading, UnknownVersion
from app.bus.delivery_store import DeliveryStore, Remembered
from app.bus.envelope import Envelope, MalformedEvent, open_with
from app.bus.metrics import EVENTS, HANDLER_SECONDS
from app.bus.retry import NotYet, PrerequisiteWait, Progress, RetryPolicy
from app.bus.watch import DEAD_LETTERED, FAILED, HANDLED, PARKED, Watch
from app.kernel.errors import StoreUnavailable
from app.kernel.tracing import context_of, span

log = logging.getLogger("app.bus")

Handler = Callable[[Any, Envelope], Awaitable[None]]


class HandlerBroken(RuntimeError):
    """What a consumer's handlers raise while broken on purpose (Bus.break_handler)."""


@dataclass(frozen=True)
class ConsumerState:
    paused: bool
    broken: bool
    backlog: int  # envelopes queued in this consumer, in this process, not yet finished


@dataclass(frozen=True)
class Subscription:
    reading: Reading  # the event, the versions accepted, the view the handler is given
    handler: Handler


@dataclass
class Item:
    """An envelope to deliver, or (envelope None) the signal to deliver what is parked."""

    aggregate_id: str
    envelope: Envelope | None
    done: asyncio.Future[None]


class Consumer:
    def __init__(
        self,
        name: str,
        retry: RetryPolicy,
        activity: Activity,
        store: DeliveryStore,
        stats: Counter[tuple[str, str, str]],
        watch: Watch | None = None,
    ) -> None:
        self.name = name
        self.watch = watch or Watch()
        self.broken = False
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._retry = retry
        self._activity = activity
        self._store = store
        self._stats = stats
        self._subscriptions: dict[str, Subscription] = {}
        self._lanes: dict[str, deque[Item]] = {}
        self._attempts: dict[str, int] = {}  # event id -> attempts made before (a restart)
        self._blocked: set[str] = set()  # aggregates with a dead letter
        self._progress = Progress()  # lanes waiting for a prerequisite wake at each handling
        self._counters: dict[tuple[str, str, str], Any] = {}

    def add(self, type_name: str, subscription: Subscription) -> None:
        self._subscriptions[type_name] = subscription

    @property
    def paused(self) -> bool:
        return not self._resumed.is_set()

    def pause(self) -> None:
        """Stop taking events off the lanes (the one being handled finishes); what arrives
        queues in order until `resume`."""
        self._resumed.clear()

    def resume(self) -> None:
        self._resumed.set()

    @property
    def state(self) -> ConsumerState:
        backlog = sum(
            1 for lane in self._lanes.values() for item in lane if item.envelope is not None
        )
        return ConsumerState(paused=self.paused, broken=self.broken, backlog=backlog)

    def restore(self, remembered: Remembered) -> list[str]:
        """Take back what the store remembers; returns aggregates whose parked events can go."""
        self._attempts = {e: n for (c, e), n in remembered.attempts.items() if c == self.name}
        self._blocked = {a for c, a in remembered.blocked if c == self.name}
        return [a for c, a in remembered.parked if c == self.name and a not in self._blocked]

    def submit(self, envelope: Envelope) -> asyncio.Future[None]:
        """Queue an envelope on its aggregate's lane; the future resolves once it is handled
        (committed by the handler), dead-lettered or parked."""
        return self._enqueue(envelope.aggregate_id, envelope)

    def release(self, aggregate_id: str) -> asyncio.Future[None]:
        """Deliver the events parked for an aggregate, in sequence order, in its lane: what
        arrived before this call was parked and goes first; what arrives after waits."""
        return self._enqueue(aggregate_id, None)

    def _enqueue(self, aggregate_id: str, envelope: Envelope | None) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        lane = self._lanes.get(aggregate_id)
        if lane is None:
            lane = self._lanes[aggregate_id] = deque()
            self._activity.spawn(
                self._drain(aggregate_id, lane), name=f"{self.name}:{aggregate_id}"
            )
        lane.append(Item(aggregate_id, envelope, done))
        return done

    async def _drain(self, key: str, lane: deque[Item]) -> None:
        try:
            while lane:
                if not self._resumed.is_set():
                    await self._resumed.wait()
                item = lane[0]
                if item.envelope is None:
                    await self._deliver_parked(key)
                else:
                    await self._deliver(item.envelope)
                lane.popleft()
                if not item.done.done():
                    item.done.set_result(None)
        finally:
            del self._lanes[key]
            for item in lane:  # only when cancelled at shutdown: the outbox keeps them
                item.done.cancel()

    async def _deliver_parked(self, aggregate_id: str) -> None:
        self._blocked.discard(aggregate_id)
        for envelope in await self._store.parked_for(self.name, aggregate_id):
            if aggregate_id in self._blocked:
                return  # one of them failed again: the rest stay parked behind it
            await self._deliver(envelope, from_parking=True)

    async def _deliver(self, envelope: Envelope, *, from_parking: bool = False) -> None:
        # Every line about it, the handler's own included, names its flow: its request and
        # correlation id, whichever request's task happened to start this lane.
        with flow_of(envelope, self.name):
            if envelope.aggregate_id in self._blocked:
                if not from_parking:  # already parked otherwise: it stays where it is
                    await self._store.park(self.name, envelope)
                    self._count(envelope, "parked")
                    self.watch.handling(PARKED, self.name, envelope, attempt=0)
                    self._log_outcome(envelope, "parked", 0.0)
                return
            subscription = self._subscriptions[envelope.type]
            try:
                event = open_with(envelope, subscription.reading)
            except NewerVersion as error:
                await self._park_newer(envelope, str(error), from_parking=from_parking)
            except (MalformedEvent, UnknownVersion) as error:
                # Older than any upcaster reaches, or not the event it says: a letter to look at.
                await self._dead_letter(envelope, str(error), tries=0)
            else:
                await self._handle(subscription, event, envelope)
            if from_parking and envelope.aggregate_id not in self._blocked:
                await self._store.unpark(self.name, envelope)

    async def _park_newer(self, envelope: Envelope, why: str, *, from_parking: bool) -> None:
        """Park an envelope this consumer is too old to read, and its aggregate's later ones
        behind it: the parked lane is released when the process starts again (upgraded, it
        reads it; still old, it parks it again). Never a dead letter: nothing failed."""
        if not from_parking:
            await self._store.park(self.name, envelope)
        self._blocked.add(envelope.aggregate_id)
        self._count(envelope, "parked")
        self.watch.handling(PARKED, self.name, envelope, attempt=0, error=why)
        log.warning(
            "%s parked %s %s for %s: %s",
            self.name,
            envelope.type,
            envelope.id,
            envelope.aggregate_id,
            why,
        )

    async def _handle(self, subscription: Subscription, event: Any, envelope: Envelope) -> None:
        tried = self._attempts.pop(envelope.id, 0)
        prerequisite = PrerequisiteWait(self._retry, self._progress)
        outage = 0  # naps taken while a store the handler needs was unreachable
        while True:
            tried += 1
            started = time.perf_counter()
            try:
                with span(
                    f"{self.name} handle {envelope.type}",
                    context=context_of(envelope.traceparent),
                    kind=SpanKind.CONSUMER,
                    attributes={
                        "seams.module": self.name,
                        "messaging.message.id": envelope.id,
                        "seams.attempt": tried,
                    },
                ):
                    if self.broken:
                        raise HandlerBroken(
                            f"the {self.name} handlers are broken on purpose from the page"
                        )
                    await subscription.handler(event, envelope)
            except Exception as error:  # a handler failure is retried, never swallowed
                if isinstance(error, NotYet) and await self._waited(envelope, prerequisite):
                    tried -= 1  # "not yet" spends no attempt (docs/decisions/0032)
                    continue
                if isinstance(error, StoreUnavailable):  # nor does a store away (0033)
                    outage += 1
                    await self._wait_for_store(envelope, outage)
                    tried -= 1
                    continue
                elapsed = time.perf_counter() - started
                self._count(envelope, "failed")
                log.warning(
                    "handler %s failed on %s %s (attempt %d/%d): %r",
                    self.name,
                    envelope.type,
                    envelope.id,
                    tried,
                    self._retry.max_attempts,
                    error,
                    extra={"envelope": msgspec.to_builtins(envelope), "consumer": self.name},
                )
                if tried >= self._retry.max_attempts:
                    await self._dead_letter(envelope, repr(error), tries=tried, seconds=elapsed)
                    return
                self.watch.handling(
                    FAILED,
                    self.name,
                    envelope,
                    attempt=tried,
                    ms=elapsed * 1000.0,
                    error=repr(error),
                )
                await self._store.record_failure(self.name, envelope, tried, repr(error))
                self._count(envelope, "retried")
                await asyncio.sleep(self._retry.delay(tried))
            else:
                elapsed = time.perf_counter() - started
                HANDLER_SECONDS.labels(envelope.type, self.name).observe(elapsed)
                self._count(envelope, "handled")
                self.watch.handling(
                    HANDLED, self.name, envelope, attempt=tried, ms=elapsed * 1000.0
                )
                self._log_outcome(envelope, "handled", elapsed)
                self._progress.moved()
                if tried > 1:
                    await self._store.forget_attempts(self.name, envelope)
                return

    async def _wait_for_store(self, envelope: Envelope, naps: int) -> None:
        """A store the handler needs cannot be reached (it restarts): wait for it as long as
        it takes, the naps doubling (RetryPolicy.store_nap); the store logs when it goes and
        comes back, the event once that it waits."""
        if naps == 1:
            log.info(
                "%s waits for its store to handle %s %s (no attempt spent)",
                self.name,
                envelope.type,
                envelope.id,
            )
        await asyncio.sleep(self._retry.store_nap(naps))

    async def _waited(self, envelope: Envelope, prerequisite: PrerequisiteWait) -> bool:
        """A NotYet: wait for the consumer's next handling (or a backoff), within the wait's
        deadline; False once past it, when it counts as an ordinary failure."""
        if prerequisite.naps == 0:
            log.info(
                "%s waits for what %s %s needs (for at most %g s, no attempt spent)",
                self.name,
                envelope.type,
                envelope.id,
                self._retry.not_yet_seconds,
            )
        return await prerequisite.waited()

    async def _dead_letter(
        self, envelope: Envelope, error: str, *, tries: int, seconds: float = 0.0
    ) -> None:
        self._count(envelope, "dead_lettered")
        self.watch.handling(
            DEAD_LETTERED, self.name, envelope, attempt=tries, ms=seconds * 1000.0, error=error
        )
        log.error(
            "dead letter: %s could not handle %s %s after %d attempts: %s",
            self.name,
            envelope.type,
            envelope.id,
            tries,
            error,
        )
        await self._store.add_dead_letter(self.name, envelope, error, tries)
        self._blocked.add(envelope.aggregate_id)

    def _log_outcome(self, envelope: Envelope, outcome: str, seconds: float) -> None:
        """One INFO line per event a consumer finished with (a failure has its own WARNING,
        a dead letter its ERROR): the story of a flow, told by the log."""
        if log.isEnabledFor(logging.INFO):
            log.info(
                "%s %s %s for %s in %.1f ms",
                self.name,
                outcome,
                envelope.type,
                envelope.aggregate_id,
                seconds * 1000.0,
            )

    def _count(self, envelope: Envelope, outcome: str) -> None:
        key = (envelope.type, self.name, outcome)
        self._stats[key] += 1
        counter = self._counters.get(key)
        if counter is None:  # labels() costs a lock and a lookup: once per series is enough
            counter = self._counters[key] = EVENTS.labels(*key)
        counter.inc()
