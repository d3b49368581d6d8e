"""One consuming module: its handlers, per-aggregate lanes, retries and dead letters.

Events about one aggregate are handled one after another, in the order they arrived;
different aggregates are handled concurrently. A handler that keeps failing turns its
event into a dead letter, and later events of the same aggregate are parked behind it
(in the delivery store, so a restart keeps them) until it is replayed or discarded.
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
from app.bus.context import current_cause, current_module
from app.bus.delivery_store import DeliveryStore, Remembered
from app.bus.envelope import Envelope, MalformedEvent, open_payload
from app.bus.events import Event
from app.bus.metrics import EVENTS, HANDLER_SECONDS
from app.bus.retry import RetryPolicy
from app.kernel.tracing import context_of, span

log = logging.getLogger("app.bus")

Handler = Callable[[Any, Envelope], Awaitable[None]]


@dataclass(frozen=True)
class Subscription:
    event_type: type[Event]
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
    ) -> None:
        self.name = name
        self._retry = retry
        self._activity = activity
        self._store = store
        self._stats = stats
        self._subscriptions: dict[str, Subscription] = {}
        self._lanes: dict[str, deque[Item]] = {}
        self._attempts: dict[str, int] = {}  # event id -> attempts made before (a restart)
        self._blocked: set[str] = set()  # aggregates with a dead letter
        self._counters: dict[tuple[str, str, str], Any] = {}

    def add(self, type_name: str, subscription: Subscription) -> None:
        self._subscriptions[type_name] = subscription

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
        if envelope.aggregate_id in self._blocked:
            if not from_parking:  # already parked otherwise: it stays where it is
                await self._store.park(self.name, envelope)
                self._count(envelope, "parked")
            return
        subscription = self._subscriptions[envelope.type]
        try:
            event = open_payload(envelope, subscription.event_type)
        except MalformedEvent as error:
            await self._dead_letter(envelope, str(error), tries=0)
        else:
            await self._handle(subscription, event, envelope)
        if from_parking and envelope.aggregate_id not in self._blocked:
            await self._store.unpark(self.name, envelope)

    async def _handle(self, subscription: Subscription, event: Event, envelope: Envelope) -> None:
        token = current_cause.set(envelope)
        module_token = current_module.set(self.name)
        tried = self._attempts.pop(envelope.id, 0)
        try:
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
                        await subscription.handler(event, envelope)
                except Exception as error:  # a handler failure is retried, never swallowed
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
                        await self._dead_letter(envelope, repr(error), tries=tried)
                        return
                    await self._store.record_failure(self.name, envelope, tried, repr(error))
                    self._count(envelope, "retried")
                    await asyncio.sleep(self._retry.delay(tried))
                else:
                    HANDLER_SECONDS.labels(envelope.type, self.name).observe(
                        time.perf_counter() - started
                    )
                    self._count(envelope, "handled")
                    if tried > 1:
                        await self._store.forget_attempts(self.name, envelope)
                    return
        finally:
            current_module.reset(module_token)
            current_cause.reset(token)

    async def _dead_letter(self, envelope: Envelope, error: str, *, tries: int) -> None:
        self._count(envelope, "dead_lettered")
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

    def _count(self, envelope: Envelope, outcome: str) -> None:
        key = (envelope.type, self.name, outcome)
        self._stats[key] += 1
        counter = self._counters.get(key)
        if counter is None:  # labels() costs a lock and a lookup: once per series is enough
            counter = self._counters[key] = EVENTS.labels(*key)
        counter.inc()
