"""A module's handle on a bus that only records what its units of work hand to the relay:
for tests that write through a store directly (no relay, no transport, nothing started)."""

from __future__ import annotations

from collections.abc import Sequence

from app.bus import Bus, Envelope, Event, ModuleBus
from app.bus.transport import InProcessTransport


class HandedOff(ModuleBus):
    def __init__(self, module: str, *, publishes: Sequence[type[Event]] = ()) -> None:
        super().__init__(Bus(InProcessTransport()), module, publishes=publishes, subscribes=())
        self.handed: list[Envelope] = []

    def committed(self, envelopes: Sequence[Envelope]) -> None:
        self.handed.extend(envelopes)
