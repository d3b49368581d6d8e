"""The bus: a mapping from event type to the consumers that declared it, over a transport.

Modules never see the Bus itself: each gets a ModuleBus bound to its name that can only
wrap the events it declared it publishes and subscribe to the ones it declared it consumes.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Coroutine, Sequence
from datetime import datetime
from typing import Any

from opentelemetry.trace import SpanKind

from app.bus.activity import Activity
from app.bus.consumer import Consumer, ConsumerState, Handler, Subscription
from app.bus.context import current_cause, current_request_id
from app.bus.contracts import View, event_of, reading
from app.bus.delivery_store import DeadLetter, DeliveryStore, Purged
from app.bus.envelope import Envelope, wrap
from app.bus.events import Event, event_type_name
from app.bus.outbox import OutboxRelay, OutboxSource
from app.bus.retry import RetryPolicy
from app.bus.transport import Transport
from app.bus.watch import Watch
from app.kernel.errors import BoundaryViolation
from app.kernel.ids import new_id
from app.kernel.tracing import current_traceparent, span
from app.kernel.tracing import refresh as refresh_tracing

log = logging.getLogger("app.bus")


class Bus:
    def __init__(
        self,
        transport: Transport,
        *,
        retry: RetryPolicy | None = None,
        outbox_sweep_seconds: float = 5.0,
        store: DeliveryStore | None = None,
        watch: Watch | None = None,
    ) -> None:
        self.transport = transport
        self.watch = watch or Watch()
        self.retry = retry or RetryPolicy()
        self.store = store or DeliveryStore("sqlite+aiosqlite:///:memory:")
        self.activity = Activity()
        self.stats: Counter[tuple[str, str, str]] = Counter()
        self._outbox_sweep_seconds = outbox_sweep_seconds
        self._consumers: dict[str, Consumer] = {}
        self._relays: list[OutboxRelay] = []
        self._started = False

    @property
    def running(self) -> bool:
        return self._started and self.transport.running

    def scoped(
        self, module: str, *, publishes: Sequence[type[Event]], subscribes: Sequence[type[Event]]
    ) -> ModuleBus:
        return ModuleBus(self, module, publishes=publishes, subscribes=subscribes)

    def subscribe(self, consumer: str, reads: type[View] | type[Event], handler: Handler) -> None:
        """The handler is given each payload through `reads`: the consumer's view of an event
        (a module's way), or the event class itself, read strictly."""
        if self._started:
            raise RuntimeError("subscribe before the bus starts")
        target = self._consumers.get(consumer)
        if target is None:
            target = self._consumers[consumer] = Consumer(
                consumer, self.retry, self.activity, self.store, self.stats, self.watch
            )
        type_name = event_type_name(event_of(reads))
        target.add(type_name, Subscription(reading(reads), handler))
        self.transport.bind(consumer, type_name, target.submit)

    def relay(self, owner: str, source: OutboxSource) -> OutboxRelay:
        relay = OutboxRelay(
            owner,
            source,
            self.transport,
            self.activity,
            sweep_seconds=self._outbox_sweep_seconds,
            watch=self.watch,
        )
        self._relays.append(relay)
        if self._started:
            asyncio.get_running_loop().create_task(relay.start())
        return relay

    async def start(self) -> None:
        refresh_tracing()
        await self.store.open()
        remembered = await self.store.remembered()
        await self.transport.start()
        self._started = True
        for consumer in self._consumers.values():
            for aggregate_id in consumer.restore(remembered):
                consumer.release(aggregate_id)  # a previous process stopped mid-release
        for relay in self._relays:
            await relay.start()

    async def stop(self) -> None:
        self.watch.end_streams()
        for relay in self._relays:
            await relay.stop()
        # The transport first: a broker transport stops fetching and gives in-flight handling
        # a moment to finish and be acked; what is left is cancelled (and redelivered).
        await self.transport.stop()
        await self.activity.cancel_all()
        await self.store.close()
        self._started = False

    async def replay(self, letter_id: str) -> DeadLetter | None:
        """Deliver a dead letter again, then the events parked behind it, in order."""
        return await self._settle_letter(letter_id, replay=True)

    async def discard(self, letter_id: str) -> DeadLetter | None:
        """Drop a dead letter for good; the events parked behind it are delivered."""
        return await self._settle_letter(letter_id, replay=False)

    async def _settle_letter(self, letter_id: str, *, replay: bool) -> DeadLetter | None:
        # Check the consumer runs here before the letter leaves the store: processes that
        # share one bus store see each other's letters, and a letter released where its
        # consumer does not run would be lost.
        found = await self.store.dead_letter(letter_id)
        if found is None:
            return None
        consumer = self._consumers.get(found.consumer)
        if consumer is None:
            raise LookupError(f"no consumer {found.consumer!r} runs in this process")
        letter = await self.store.release(letter_id, replay=replay)
        if letter is not None:
            consumer.release(letter.envelope.aggregate_id)
        return letter

    async def purge_failures(self, cutoff: datetime) -> Purged:
        """Delete this process's consumers' dead letters, parked events and attempts from
        before the cutoff (docs/decisions/0035-retention.md): each letter is logged, and a
        lane left with no letter is delivered as if its letter had been discarded."""
        purged = await self.store.purge(cutoff, self._consumers.keys())
        lanes: dict[str, set[str]] = {}
        for letter in purged.dead_letters:
            log.warning(
                "purged dead letter %s (%s for %s, aggregate %s, failed at %s): "
                "older than the dead-letter retention",
                letter.id,
                letter.envelope.type,
                letter.consumer,
                letter.envelope.aggregate_id,
                letter.failed_at,
            )
            lanes.setdefault(letter.consumer, set()).add(letter.envelope.aggregate_id)
        for name, aggregates in lanes.items():
            still_blocked = await self.store.blocked_lanes(name, aggregates)
            for aggregate_id in aggregates - still_blocked:
                self._consumers[name].release(aggregate_id)
        return purged

    async def wait_quiet(self, timeout: float = 10.0) -> None:
        await self.activity.wait_quiet(timeout)

    # The faults a page switches on (issue 14): each names a consumer of this process.

    def consumers(self) -> list[str]:
        """The consumers running in this process (a module that subscribes to anything)."""
        return sorted(self._consumers)

    def pause(self, consumer: str) -> None:
        """The consumer stops taking events off its lanes; they queue (its backlog grows)
        until `resume`, which delivers them in order. Nothing is lost. In process, the
        relay's publish of such an event waits, in the background, and the bus is not quiet."""
        self._consumer(consumer).pause()

    def resume(self, consumer: str) -> None:
        self._consumer(consumer).resume()

    def break_handler(self, consumer: str) -> None:
        """Every attempt of the consumer's handlers fails (HandlerBroken) until
        `mend_handler`: events are retried, then dead-lettered, and can be replayed."""
        self._consumer(consumer).broken = True

    def mend_handler(self, consumer: str) -> None:
        self._consumer(consumer).broken = False

    def consumer_state(self, consumer: str) -> ConsumerState:
        return self._consumer(consumer).state

    def _consumer(self, name: str) -> Consumer:
        consumer = self._consumers.get(name)
        if consumer is None:
            running = ", ".join(sorted(self._consumers)) or "none"
            raise LookupError(
                f"no consumer {name!r} runs in this process (consumers here: {running})"
            )
        return consumer


class ModuleBus:
    """A module's handle on the bus: only what it declared, always in its own name."""

    def __init__(
        self,
        bus: Bus,
        module: str,
        *,
        publishes: Sequence[type[Event]],
        subscribes: Sequence[type[Event]],
    ) -> None:
        self._bus = bus
        self.module = module
        self.publishes = tuple(publishes)
        self.subscribes = tuple(subscribes)
        self._relay: OutboxRelay | None = None

    def envelopes(
        self, events: Sequence[Event], *, aggregate_id: str, last_sequence: int
    ) -> list[Envelope]:
        """The events an aggregate change caused, in envelopes numbered up to its sequence
        after the change (the last event gets `last_sequence`)."""
        first = last_sequence - len(events) + 1
        return [
            self.envelope(event, aggregate_id=aggregate_id, sequence=first + offset)
            for offset, event in enumerate(events)
        ]

    def envelope(self, event: Event, *, aggregate_id: str, sequence: int) -> Envelope:
        """Wrap an event for the outbox. Correlation and causation come from what runs now."""
        if type(event) not in self.publishes:
            raise BoundaryViolation(
                f"module {self.module!r} publishes {event_type_name(type(event))}, which it "
                f"did not declare: add it to `publishes` in app/modules/{self.module}/module.py"
            )
        cause = current_cause.get()
        if cause is not None:
            correlation_id, causation_id = cause.correlation_id, cause.id
        else:
            correlation_id, causation_id = current_request_id.get() or new_id(), None
        type_name = event_type_name(type(event))
        with span(
            f"{self.module} publish {type_name}",
            kind=SpanKind.PRODUCER,
            attributes={"seams.module": self.module, "messaging.destination.name": type_name},
        ):
            return wrap(
                event,
                producer=self.module,
                aggregate_id=aggregate_id,
                sequence=sequence,
                correlation_id=correlation_id,
                causation_id=causation_id,
                traceparent=current_traceparent(),
            )

    def subscribe(self, reads: type[View] | type[Event], handler: Handler) -> None:
        if event_of(reads) not in self.subscribes:
            raise BoundaryViolation(
                f"module {self.module!r} subscribes to {event_type_name(event_of(reads))}, "
                "which it did not declare: add its view to `reads` in "
                f"app/modules/{self.module}/module.py"
            )
        self._bus.subscribe(self.module, reads, handler)

    def attach_outbox(self, source: OutboxSource) -> None:
        self._relay = self._bus.relay(self.module, source)

    def committed(self, envelopes: Sequence[Envelope]) -> None:
        """The envelopes a unit of work just committed to the outbox, for the relay: only
        a unit of work calls this (app/bus/unit_of_work.py), never a service."""
        if not envelopes:
            return
        if self._relay is None:
            raise RuntimeError(f"module {self.module!r} has no outbox attached")
        self._relay.hand_off(envelopes)

    def background(self, work: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Run work caused by an event in the background; the bus is not quiet until it ends."""
        return self._bus.activity.spawn(work, name=f"{self.module}:{name}")
