"""One consuming module: its handlers, per-aggregate lanes, retries and dead letters.

Events about one aggregate are handled one after another, in the order they arrived;
different aggregates are handled concurrently.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from app.bus.activity import Activity
from app.bus.context import current_cause
from app.bus.envelope import Envelope, MalformedEvent, open_payload
from app.bus.events import Event
from app.bus.retry import RetryPolicy
from app.kernel.ids import isoformat, new_id, utcnow

log = logging.getLogger("app.bus")

Handler = Callable[[Any, Envelope], Awaitable[None]]


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    consumer: str
    envelope: Envelope
    error: str
    attempts: int
    failed_at: str


@dataclass(frozen=True)
class Subscription:
    event_type: type[Event]
    handler: Handler


class Consumer:
    def __init__(
        self,
        name: str,
        retry: RetryPolicy,
        activity: Activity,
        on_dead_letter: Callable[[DeadLetter], None],
        stats: Counter[tuple[str, str, str]],
    ) -> None:
        self.name = name
        self._retry = retry
        self._activity = activity
        self._on_dead_letter = on_dead_letter
        self._stats = stats
        self._subscriptions: dict[str, Subscription] = {}
        self._lanes: dict[str, deque[tuple[Envelope, asyncio.Future[None]]]] = {}

    @property
    def event_types(self) -> list[str]:
        return list(self._subscriptions)

    def add(self, type_name: str, subscription: Subscription) -> None:
        self._subscriptions[type_name] = subscription

    def submit(self, envelope: Envelope) -> asyncio.Future[None]:
        """Queue an envelope on its aggregate's lane; the future resolves once it is handled
        (committed by the handler) or dead-lettered."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        lane = self._lanes.get(envelope.aggregate_id)
        if lane is None:
            lane = self._lanes[envelope.aggregate_id] = deque()
            self._activity.spawn(
                self._drain(envelope.aggregate_id, lane),
                name=f"{self.name}:{envelope.aggregate_id}",
            )
        lane.append((envelope, done))
        return done

    async def _drain(self, key: str, lane: deque[tuple[Envelope, asyncio.Future[None]]]) -> None:
        try:
            while lane:
                envelope, done = lane[0]
                await self._deliver(envelope)
                lane.popleft()
                if not done.done():
                    done.set_result(None)
        finally:
            del self._lanes[key]
            for _, done in lane:  # only when cancelled at shutdown: the outbox keeps them
                done.cancel()

    async def _deliver(self, envelope: Envelope) -> None:
        subscription = self._subscriptions[envelope.type]
        try:
            event = open_payload(envelope, subscription.event_type)
        except MalformedEvent as error:
            self._dead_letter(envelope, str(error), attempts=0)
            return
        token = current_cause.set(envelope)
        try:
            for attempt in range(1, self._retry.max_attempts + 1):
                try:
                    await subscription.handler(event, envelope)
                except Exception as error:  # a handler failure is retried, never swallowed
                    self._count(envelope, "failed")
                    log.warning(
                        "handler %s failed on %s %s (attempt %d/%d): %r",
                        self.name,
                        envelope.type,
                        envelope.id,
                        attempt,
                        self._retry.max_attempts,
                        error,
                        extra={"envelope": msgspec.to_builtins(envelope), "consumer": self.name},
                    )
                    if attempt == self._retry.max_attempts:
                        self._dead_letter(envelope, repr(error), attempts=attempt)
                        return
                    self._count(envelope, "retried")
                    await asyncio.sleep(self._retry.delay(attempt))
                else:
                    self._count(envelope, "handled")
                    return
        finally:
            current_cause.reset(token)

    def _dead_letter(self, envelope: Envelope, error: str, *, attempts: int) -> None:
        self._count(envelope, "dead_lettered")
        log.error(
            "dead letter: %s could not handle %s %s after %d attempts: %s",
            self.name,
            envelope.type,
            envelope.id,
            attempts,
            error,
        )
        self._on_dead_letter(
            DeadLetter(
                id=new_id(),
                consumer=self.name,
                envelope=envelope,
                error=error,
                attempts=attempts,
                failed_at=isoformat(utcnow()),
            )
        )

    def _count(self, envelope: Envelope, outcome: str) -> None:
        self._stats[(envelope.type, self.name, outcome)] += 1
