"""How envelopes travel. The bus and the modules see only this interface, so the in-process
transport can be swapped for a broker (NATS JetStream) by one setting."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from pyee.asyncio import AsyncIOEventEmitter

from app.bus.envelope import Envelope

# Takes an envelope in and returns a future that resolves once that consumer is done with it.
Sink = Callable[[Envelope], "asyncio.Future[None]"]


class Transport(Protocol):
    name: str

    @property
    def running(self) -> bool: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def bind(self, consumer: str, event_type: str, sink: Sink) -> None: ...

    async def publish(self, envelope: Envelope) -> None:
        """Return once the transport answers for the envelope: here, once every consumer has
        handled or dead-lettered it; on a broker, once the broker has stored it."""
        ...

    async def ping(self) -> None:
        """Raise unless the transport can carry envelopes now (readiness)."""
        ...

    async def backlog(self) -> int:
        """Envelopes the transport holds for this process's consumers and has not had
        answered yet: 0 in process (publish returns once they are handled)."""
        ...


class InProcessTransport:
    """pyee fans each envelope out to the consumers bound to its type, in this process."""

    name = "memory"

    def __init__(self) -> None:
        self._emitter = AsyncIOEventEmitter()
        self._running = False

    @property
    def running(self) -> bool:
        return self._running

    async def start(self) -> None:
        self._running = True

    async def stop(self) -> None:
        self._running = False

    def bind(self, consumer: str, event_type: str, sink: Sink) -> None:
        def receive(envelope: Envelope, receipts: list[asyncio.Future[None]]) -> None:
            receipts.append(sink(envelope))

        self._emitter.add_listener(event_type, receive)

    async def publish(self, envelope: Envelope) -> None:
        if not self._running:
            raise RuntimeError("the in-process transport is stopped")
        receipts: list[asyncio.Future[None]] = []
        self._emitter.emit(envelope.type, envelope, receipts)
        if len(receipts) == 1:  # the common case: no gather, no extra future
            await receipts[0]
        elif receipts:
            await asyncio.gather(*receipts)

    async def backlog(self) -> int:
        return 0

    async def ping(self) -> None:
        if not self._running:
            raise RuntimeError("the in-process transport is stopped")
