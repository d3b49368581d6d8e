"""Module tests in isolation, in the spirit of Spring Modulith's Scenario API.

    async with scenario(payments_module) as s:
        await s.deliver(OrderPlaced(...), producer="orders", aggregate_id=order_id)
        assert [type(e) for e in s.published_events()] == [PaymentSucceeded]
        assert (await s.client.get(f"/api/payments?order_id={order_id}")).json()[...]

One module boots alone with its own store (in memory by default) behind the gateway. Events
from other modules are fed in as if their producer had published them; everything the
module publishes is recorded, in order, by a consumer that subscribed to all of it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import msgspec

from app.bus import Envelope, Event, event_type_name
from app.bus.envelope import wrap
from app.modules.spec import Module
from app.runtime import Runtime
from tests.support.seams import Seams, fast_settings, running

RECORDER = "scenario-recorder"


class Scenario:
    def __init__(self, seams: Seams, module: Module) -> None:
        self.seams = seams
        self.module = module
        self.published: list[Envelope] = []

    @property
    def client(self) -> httpx.AsyncClient:
        return self.seams.client

    def headers_for(self, user_id: str) -> dict[str, str]:
        """Act as this user (the client itself acts as an admin)."""
        return self.seams.headers_for(user_id)

    @property
    def store(self) -> Any:
        """The module's own store, to assert the state it keeps."""
        return next(m.store for m in self.seams.runtime.modules if m.module is self.module)

    async def deliver(
        self, event: Event, *, producer: str, aggregate_id: str, sequence: int = 1
    ) -> Envelope:
        """Publish an event as `producer` would; returns once the module has handled it."""
        envelope = wrap(
            event,
            producer=producer,
            aggregate_id=aggregate_id,
            sequence=sequence,
            correlation_id=f"scenario-{aggregate_id}",
            causation_id=None,
        )
        await self.redeliver(envelope)
        return envelope

    async def redeliver(self, envelope: Envelope) -> None:
        await self.seams.runtime.bus.transport.publish(envelope)

    async def settle(self, timeout: float = 10.0) -> None:
        await self.seams.settle(timeout)

    def published_events(self) -> list[Event]:
        by_name = {event_type_name(e): e for e in self.module.publishes}
        return [msgspec.convert(e.payload, by_name[e.type]) for e in self.published]


@asynccontextmanager
async def scenario(module: Module, **settings: Any) -> AsyncIterator[Scenario]:
    settings.setdefault("ephemeral", "true")
    recorded: list[Envelope] = []

    async def record(_event: Event, envelope: Envelope) -> None:
        recorded.append(envelope)

    def subscribe_recorder(runtime: Runtime) -> None:
        for event_type in module.publishes:
            runtime.bus.subscribe(RECORDER, event_type, record)

    async with running(fast_settings(**settings), [module], subscribe_recorder) as seams:
        result = Scenario(seams, module)
        result.published = recorded
        yield result
