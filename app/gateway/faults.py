"""/api/admin/faults: the faults a learner may switch on in development, to watch the system
cope (issue 14, point 6). Each switch is declared where its fault lives: a module declares
its own in its Assembly (e.g. a card processor's declines, errors and slow network); the
bus's consumers each get two here (pause it, break its handlers). The gateway only
lists them, checks a new value against the switch's kind, and logs who changed what.

Under APP_ENV=production every route here is refused: a fault switch is a teaching aid,
never something a running shop should expose, even to its admins.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete, get, put
from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler
from litestar.params import JSONBody, PathParameter

from app.bus import Bus
from app.gateway.auth import admins_only
from app.kernel.errors import BoundaryViolation, Forbidden, InvalidInput, NotFound
from app.kernel.problems import AUTHENTICATED, WITH_BODY, problems
from app.modules.spec import FaultSwitch, SwitchKind, SwitchValue
from app.runtime import Runtime

log = logging.getLogger("app.gateway.faults")

PRODUCTION_REFUSAL = "fault switches exist only in development: APP_ENV=production"

SwitchName = Annotated[
    str,
    PathParameter(
        max_length=100, description="A switch's name, e.g. decline_rate or pause:<consumer>."
    ),
]


class SwitchOut(msgspec.Struct, frozen=True):
    """A switch as the page shows it: what it is, what it does, where it stands."""

    name: str
    module: str
    label: str
    explain: str
    kind: SwitchKind
    value: SwitchValue
    min: SwitchValue
    max: SwitchValue


class SwitchChange(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A switch's new value: a number for a rate (0..1) or seconds (0..30), true or false
    for an on/off switch."""

    value: SwitchValue


@dataclass(frozen=True)
class Placed:
    """A switch and the module it belongs to."""

    module: str
    switch: FaultSwitch


def switchboard(runtime: Runtime) -> dict[str, Placed]:
    """Every switch of the running system by name; two with one name are a wiring error."""
    board: dict[str, Placed] = {}
    for placed in _every_switch(runtime):
        name = placed.switch.name
        if name in board:
            raise BoundaryViolation(
                f"module {placed.module!r} declares the fault switch {name!r}, which "
                f"{board[name].module!r} declares already: every switch has one name"
            )
        board[name] = placed
    return board


def _every_switch(runtime: Runtime) -> Iterator[Placed]:
    for running in runtime.modules:
        for switch in running.assembly.switches:
            yield Placed(running.module.name, switch)
    for consumer in runtime.bus.consumers():
        yield Placed(consumer, _pause_switch(runtime.bus, consumer))
        yield Placed(consumer, _break_switch(runtime.bus, consumer))


def _pause_switch(bus: Bus, consumer: str) -> FaultSwitch:
    return _consumer_switch(
        consumer,
        name=f"pause:{consumer}",
        label=f"Pause {consumer}",
        explain=f"{consumer.capitalize()} stops taking events, as a service that is down or "
        "being deployed: its backlog grows while the producers carry on, and on resume the "
        "queued events are handled in order, none lost.",
        read=lambda: bus.consumer_state(consumer).paused,
        on=bus.pause,
        off=bus.resume,
    )


def _break_switch(bus: Bus, consumer: str) -> FaultSwitch:
    return _consumer_switch(
        consumer,
        name=f"break:{consumer}",
        label=f"Break {consumer}'s handler",
        explain=f"Every event {consumer} handles fails, as a bug or a lost database would: "
        "each is retried with backoff, then becomes a dead letter with later events of its "
        "aggregate parked behind it; mend it, replay the dead letter, and the flow completes "
        "exactly once.",
        read=lambda: bus.consumer_state(consumer).broken,
        on=bus.break_handler,
        off=bus.mend_handler,
    )


def _consumer_switch(
    consumer: str,
    *,
    name: str,
    label: str,
    explain: str,
    read: Callable[[], bool],
    on: Callable[[str], None],
    off: Callable[[str], None],
) -> FaultSwitch:
    """An on/off switch over one of the bus's controls of a consumer."""

    async def current() -> SwitchValue:
        return read()

    async def write(value: SwitchValue) -> None:
        (on if value else off)(consumer)

    return FaultSwitch(
        name=name, label=label, explain=explain, kind=SwitchKind.ON_OFF, read=current, write=write
    )


def checked(switch: FaultSwitch, value: SwitchValue) -> SwitchValue:
    """The value if the switch's kind takes it; InvalidInput (400) naming `value` if not."""
    least, most = switch.kind.bounds
    if switch.kind is SwitchKind.ON_OFF:
        if not isinstance(value, bool):
            raise InvalidInput("value", f"{switch.name} is on or off: send true or false")
        return value
    if isinstance(value, bool):
        raise InvalidInput("value", f"{switch.name} takes a number from {least} to {most}")
    if not least <= value <= most:
        raise InvalidInput(
            "value", f"{switch.name} takes a number from {least} to {most}, not {value}"
        )
    return float(value)


async def described(placed: Placed) -> SwitchOut:
    switch = placed.switch
    least, most = switch.kind.bounds
    return SwitchOut(
        name=switch.name,
        module=placed.module,
        label=switch.label,
        explain=switch.explain,
        kind=switch.kind,
        value=await switch.read(),
        min=least,
        max=most,
    )


def development_only(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Refuse every fault route in production, whoever asks."""
    runtime: Runtime = connection.app.state.runtime
    if runtime.settings.env == "production":
        raise Forbidden(PRODUCTION_REFUSAL)


def _runtime(request: Request[Any, Any, Any]) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _who(request: Request[Any, Any, Any]) -> str:
    return str(getattr(request.user, "id", "someone"))


class FaultsController(Controller):
    path = "/api/admin/faults"
    tags = ["admin"]
    guards = [development_only, admins_only]

    @get(
        "/",
        operation_id="listFaultSwitches",
        responses=problems(*AUTHENTICATED, 403),
        summary="The faults you can switch on in development, each with what it does",
        description="Each switch says which module it belongs to, what kind of value it takes "
        "(`rate` 0..1, `seconds` 0..30, `on_off`), its value now and, in `explain`, what a "
        "real system would see and do. Refused (403) under APP_ENV=production.",
    )
    async def list_switches(self, request: Request[Any, Any, Any]) -> list[SwitchOut]:
        return [await described(placed) for placed in switchboard(_runtime(request)).values()]

    @put(
        "/{name:str}",
        operation_id="setFaultSwitch",
        responses=problems(*AUTHENTICATED, *WITH_BODY, 403, 404),
        summary="Set one fault switch; the switch as it is now",
        description="`value` is a number for a rate (0..1) or seconds (0..30), true or false "
        "for an on/off switch. Every change is logged at WARNING with who made it.",
    )
    async def set_switch(
        self, request: Request[Any, Any, Any], name: SwitchName, data: JSONBody[SwitchChange]
    ) -> SwitchOut:
        placed = switchboard(_runtime(request)).get(name)
        if placed is None:
            raise NotFound(f"no fault switch {name!r}")
        value = checked(placed.switch, data.value)
        before = await placed.switch.read()
        await placed.switch.write(value)
        log.warning(
            "fault switch %s (%s) set from %s to %s by %s",
            name,
            placed.module,
            before,
            value,
            _who(request),
        )
        return await described(placed)

    @delete(
        "/",
        operation_id="resetFaultSwitches",
        responses=problems(*AUTHENTICATED, 403),
        summary="Switch every fault off",
        status_code=204,
    )
    async def reset(self, request: Request[Any, Any, Any]) -> None:
        for name, placed in switchboard(_runtime(request)).items():
            if await placed.switch.read() != placed.switch.off:
                await placed.switch.write(placed.switch.off)
                log.warning(
                    "fault switch %s (%s) switched off by %s", name, placed.module, _who(request)
                )
