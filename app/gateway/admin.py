"""/api/admin: what the bus is doing. The gateway owns these routes (decision 3)."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, get

from app.runtime import Runtime


class Count(msgspec.Struct, frozen=True):
    type: str
    consumer: str
    outcome: str
    count: int


class BusState(msgspec.Struct, frozen=True):
    running: bool
    busy: int
    dead_letters: int
    counts: list[Count]


class AdminController(Controller):
    path = "/api/admin"
    tags = ["admin"]

    @get(
        "/bus",
        operation_id="getBusState",
        summary="Work under way, dead letters, and events handled per type and consumer",
        description="`busy` is 0 when every event has been handled and every charge has ended.",
    )
    async def bus_state(self, request: Request[Any, Any, Any]) -> BusState:
        runtime: Runtime = request.app.state.runtime
        bus = runtime.bus
        return BusState(
            running=bus.running,
            busy=bus.activity.busy,
            dead_letters=len(bus.dead_letters),
            counts=[
                Count(type=t, consumer=c, outcome=o, count=n)
                for (t, c, o), n in sorted(bus.stats.items())
            ],
        )
