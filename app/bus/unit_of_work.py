"""A unit of work: one commit in a module's own store that holds everything a change needs
to be delivered exactly once (docs/decisions/0023-unit-of-work.md).

Inside it a module claims the event that caused the change (its inbox), writes the effect,
adds the events the change caused (its outbox) and, for a create with an Idempotency-Key,
the response to replay. The store commits them together or not at all; once committed,
the unit of work, never a service, hands the events to the module's outbox relay.

Each store has its own kind (app/bus/sql_outbox.py for SQL stores, the orders document
store for orders); a service sees the same few verbs on all of them:

    async with store.unit_of_work(bus, cause=envelope) as work:
        if work.handled_before:
            return
        ...write the effect through the store, with `work`...
        work.publish(changed, events)
    if work.committed: ...
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from app.bus.bus import ModuleBus
from app.bus.envelope import Envelope
from app.bus.events import Event
from app.kernel.idempotency import IdempotentWrite, StoredResponse


class Aggregate(Protocol):
    """What numbers an aggregate's events: its id and the sequence of its last event."""

    @property
    def id(self) -> str: ...

    @property
    def event_sequence(self) -> int: ...


class UnitOfWork:
    """What one commit writes beside the effect, and the hand-off once it is committed."""

    def __init__(self, bus: ModuleBus, cause: Envelope | None) -> None:
        self._bus = bus
        self.cause = cause
        self.envelopes: list[Envelope] = []
        self.response: tuple[IdempotentWrite, StoredResponse] | None = None
        self.handled_before = False  # the cause was claimed by an earlier commit
        self.cancelled = False
        self.committed = False

    def publish(self, aggregate: Aggregate, events: Sequence[Event]) -> None:
        """The events this change of `aggregate` caused, written with it, numbered up to
        its sequence after the change."""
        self.envelopes.extend(
            self._bus.envelopes(
                events, aggregate_id=aggregate.id, last_sequence=aggregate.event_sequence
            )
        )

    async def remember(self, write: IdempotentWrite, created: Any) -> StoredResponse:
        """The response to replay for this request's Idempotency-Key, stored with the effect
        (a store may write it at once, and raise KeyTaken when another request did first)."""
        response = write.response_for(created)
        self.response = (write, response)
        return response

    def cancel(self) -> None:
        """Write nothing and publish nothing: the change lost a race, or needs no write."""
        self.cancelled = True

    def finish(self) -> None:
        """Called by the store right after its commit: hand the events to the relay."""
        self.committed = True
        if self.envelopes:
            self._bus.committed(self.envelopes)
