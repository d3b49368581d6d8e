"""/api/admin: what the bus is doing, and its dead letters to inspect, replay or discard.
The gateway owns these routes (docs/decisions/0003-route-ownership.md)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.params import PathParameter

from app.bus import Bus, DeadLetter, Envelope
from app.gateway.auth import admins_only
from app.kernel.errors import Conflict, NotFound
from app.kernel.pages import DEFAULT_LIMIT, Cursor, Limit, Page, page_of
from app.kernel.problems import AUTHENTICATED, problems
from app.runtime import Runtime

LetterId = Annotated[str, PathParameter(max_length=64, description="A dead letter's id.")]


class Count(msgspec.Struct, frozen=True):
    type: str
    consumer: str
    outcome: str
    count: int


class BusState(msgspec.Struct, frozen=True):
    running: bool
    busy: int
    backlog: int  # held by a broker for this process's consumers, unanswered (0 in process)
    dead_letters: int
    counts: list[Count]


class DeadLetterOut(msgspec.Struct, frozen=True):
    id: str
    consumer: str
    event_type: str
    aggregate_id: str
    error: str
    attempts: int
    failed_at: str
    envelope: Envelope


class Replayed(msgspec.Struct, frozen=True):
    replayed: list[str]


# Replay-all takes at most this many letters at once (call it again for more).
MAX_REPLAY_ALL = 10_000


async def _settled(
    settle: Callable[[str], Awaitable[DeadLetter | None]], letter_id: str
) -> DeadLetter | None:
    """Replay or discard here; a letter whose consumer runs in another process (processes
    sharing one bus store) is a 409 naming it, and stays where it is."""
    try:
        return await settle(letter_id)
    except LookupError as error:
        raise Conflict(f"{error}: replay or discard it through the gateway") from None


def _out(letter: DeadLetter) -> DeadLetterOut:
    return DeadLetterOut(
        id=letter.id,
        consumer=letter.consumer,
        event_type=letter.envelope.type,
        aggregate_id=letter.envelope.aggregate_id,
        error=letter.error,
        attempts=letter.attempts,
        failed_at=letter.failed_at,
        envelope=letter.envelope,
    )


def _bus(request: Request[Any, Any, Any]) -> Bus:
    runtime: Runtime = request.app.state.runtime
    return runtime.bus


class AdminController(Controller):
    path = "/api/admin"
    tags = ["admin"]
    guards = [admins_only]

    @get(
        "/bus",
        operation_id="getBusState",
        responses=problems(*AUTHENTICATED, 403),
        summary="Work under way, dead letters, and events handled per type and consumer",
        description="`busy` is 0 when every event has been handled and every charge has ended; "
        "`backlog` counts events a broker still holds for this process's consumers.",
    )
    async def bus_state(self, request: Request[Any, Any, Any]) -> BusState:
        bus = _bus(request)
        return BusState(
            running=bus.running,
            busy=bus.activity.busy,
            backlog=await bus.transport.backlog() if bus.running else 0,
            dead_letters=await bus.store.count_dead_letters(),
            counts=[
                Count(type=t, consumer=c, outcome=o, count=n)
                for (t, c, o), n in sorted(bus.stats.items())
            ],
        )

    @get(
        "/dead-letters",
        operation_id="listDeadLetters",
        responses=problems(*AUTHENTICATED, 403),
        summary="Events a consumer could not handle, with the error and the attempts made",
    )
    async def dead_letters(
        self, request: Request[Any, Any, Any], limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
    ) -> Page[DeadLetterOut]:
        letters = await _bus(request).store.dead_letters(after=cursor, limit=limit + 1)
        return page_of([_out(letter) for letter in letters], limit)

    @get(
        "/dead-letters/{letter_id:str}",
        operation_id="getDeadLetter",
        responses=problems(*AUTHENTICATED, 403, 404),
        summary="One dead letter",
    )
    async def dead_letter(
        self, request: Request[Any, Any, Any], letter_id: LetterId
    ) -> DeadLetterOut:
        letter = await _bus(request).store.dead_letter(letter_id)
        if letter is None:
            raise NotFound(f"no dead letter {letter_id!r}")
        return _out(letter)

    @post(
        "/dead-letters/{letter_id:str}/replay",
        operation_id="replayDeadLetter",
        responses=problems(*AUTHENTICATED, 403, 404, 409),
        summary="Deliver it again, then the events of its aggregate parked behind it",
        status_code=202,
    )
    async def replay(self, request: Request[Any, Any, Any], letter_id: LetterId) -> Replayed:
        if await _settled(_bus(request).replay, letter_id) is None:
            raise NotFound(f"no dead letter {letter_id!r}")
        return Replayed(replayed=[letter_id])

    @post(
        "/dead-letters/replay",
        operation_id="replayAllDeadLetters",
        responses=problems(*AUTHENTICATED, 403),
        summary="Replay every dead letter",
        status_code=202,
    )
    async def replay_all(self, request: Request[Any, Any, Any]) -> Replayed:
        bus = _bus(request)
        runs_here = set(bus.consumers())
        replayed = [
            letter.id
            for letter in await bus.store.dead_letters(after=None, limit=MAX_REPLAY_ALL)
            if letter.consumer in runs_here and await bus.replay(letter.id)
        ]
        return Replayed(replayed=replayed)

    @delete(
        "/dead-letters/{letter_id:str}",
        operation_id="discardDeadLetter",
        responses=problems(*AUTHENTICATED, 403, 404, 409),
        summary="Drop it for good; the events parked behind it are delivered",
        status_code=204,
    )
    async def discard(self, request: Request[Any, Any, Any], letter_id: LetterId) -> None:
        if await _settled(_bus(request).discard, letter_id) is None:
            raise NotFound(f"no dead letter {letter_id!r}")
