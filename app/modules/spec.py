"""The Module spec: what a module is, declares and needs. Every module has the same shape."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from litestar.di import Provide
from litestar.types import ControllerRouterHandler

from app.bus import Event, ModuleBus, View, event_type_name
from app.bus.consumer import Handler
from app.bus.outbox import OutboxSource
from app.kernel.boundaries import ModuleSource
from app.kernel.errors import BoundaryViolation
from app.kernel.identity import CredentialsDirectory, TokenIssuer
from app.kernel.sealing import Keyring, PersonalData
from app.kernel.settings import Seconds, Settings

__all__ = [
    "ApiPrefixes",
    "Assembly",
    "Command",
    "CommandRun",
    "FaultSwitch",
    "Module",
    "ModuleContext",
    "Option",
    "Seconds",  # a duration setting, for a module's settings section
    "Store",
    "SwitchKind",
    "SwitchValue",
    "UserData",
    "api_prefix",
]


class Store(Protocol):
    """A module's private store, as the composition root and the gateway's /ready see it."""

    kind: str
    display_url: str

    async def open(self) -> None: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class ModuleContext:
    """Everything a module is given: its own store, its own bus handle, the settings."""

    name: str
    store: Any
    bus: ModuleBus
    settings: Settings  # what the whole process shares, without store URLs or secrets
    tokens: TokenIssuer  # signs access tokens; only the module owning credentials uses it
    fingerprint_key: bytes  # keys idempotency fingerprints (idempotency.fingerprint_key)
    section: Any = None  # its own settings: an instance of Module.settings (None without)
    # Opens personal data sealed in events, by asking the module owning the keys
    # (docs/decisions/0030-crypto-shredding.md).
    personal_data: PersonalData = field(default_factory=PersonalData)


SwitchValue = float | bool


class SwitchKind(StrEnum):
    """What a fault switch takes: a fraction of calls, a delay, or on/off."""

    RATE = "rate"  # 0..1: the fraction of calls it affects
    SECONDS = "seconds"  # 0..30: how long each call waits
    ON_OFF = "on_off"  # true or false

    @property
    def bounds(self) -> tuple[SwitchValue, SwitchValue]:
        """The least and the most it takes; the least is off."""
        return _SWITCH_BOUNDS[self]


_SWITCH_BOUNDS: dict[SwitchKind, tuple[SwitchValue, SwitchValue]] = {
    SwitchKind.RATE: (0.0, 1.0),
    SwitchKind.SECONDS: (0.0, 30.0),
    SwitchKind.ON_OFF: (False, True),
}


@dataclass(frozen=True)
class FaultSwitch:
    """A fault a learner may switch on in development, declared by the part that has it (a
    module in its Assembly; the gateway for the bus's consumers), so the switch reaches
    the real code path instead of a mock. Async both ways: a switch may have to ask a store
    or a broker."""

    name: str  # unique in the system, e.g. decline_rate, pause:payments
    label: str  # a few words for the toggle
    explain: str  # one sentence: what a real system would see and do
    kind: SwitchKind
    read: Callable[[], Awaitable[SwitchValue]]
    write: Callable[[SwitchValue], Awaitable[None]]  # given a value checked against kind

    @property
    def off(self) -> SwitchValue:
        return self.kind.bounds[0]


@dataclass
class Assembly:
    """What a module hands back to the composition root once it has built its parts."""

    route_handlers: Sequence[ControllerRouterHandler]  # served under /api/<module name>
    dependencies: Mapping[str, Provide]
    # Routes under other /api/<prefix>es the module declared in `also_serves`.
    also_routes: Mapping[str, Sequence[ControllerRouterHandler]] = field(default_factory=dict)
    # Its handler of each event it subscribes to, keyed by its view of it (Module.reads), or
    # the event itself where it has none: the handler is given the payload as that.
    handlers: Mapping[type[View] | type[Event], Handler] = field(default_factory=dict)
    outbox: OutboxSource | None = None
    on_start: Sequence[Callable[[], Awaitable[None]]] = ()
    on_stop: Sequence[Callable[[], Awaitable[None]]] = ()
    # Deletes what is kept only for a while (delivered outbox rows, handled inbox ids,
    # expired idempotency keys) from before the given moment; returns how many went of each
    # kind ("outbox", "inbox", "idempotency_keys"), counted in seams_purged
    # (docs/decisions/0035-retention.md).
    purge: Callable[[datetime], Awaitable[Mapping[str, int]]] | None = None
    # What its commands (Module.commands) run in the started system, by command name.
    commands: Mapping[str, Callable[..., Awaitable[Any]]] = field(default_factory=dict)
    # The module owning credentials offers the gateway their current state (app/gateway/auth.py).
    credentials: CredentialsDirectory | None = None
    # The module owning the keys of personal data offers every module to open what they
    # sealed (docs/decisions/0030-crypto-shredding.md).
    keyring: Keyring | None = None
    # The faults it lets a learner switch on in development (app/gateway/faults.py).
    switches: Sequence[FaultSwitch] = ()


@dataclass(frozen=True)
class Option:
    """One --flag of a module's command."""

    flag: str  # e.g. --email
    help: str
    default: str | None = None
    switch: bool = False  # on when given, takes no value

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


class CommandRun(Protocol):
    """What `python -m app <command>` hands a module's command, holding the data dir."""

    settings: Settings

    def refuse(self, reason: str) -> int:
        """Say why on one line of standard error; the exit status (2)."""
        ...

    def operate(self, **arguments: Any) -> tuple[Any, Store]:
        """Start the system, run the module's operation of the command's name (Assembly.
        commands), let its events reach their consumers, stop; its result and the store."""
        ...


@dataclass(frozen=True)
class Command:
    """A command the module adds to `python -m app`: its name, options and what it does
    with the options' values (by Option.dest); returns the exit status."""

    name: str
    help: str
    options: tuple[Option, ...]
    run: Callable[[Mapping[str, Any], CommandRun], int]


@dataclass(frozen=True)
class UserData:
    """Where a module's own API shows what it holds about one user, for the gateway's export
    (GET /api/<prefix>/{id}/export under the module whose `record` it is; app/gateway/export.py,
    docs/decisions/0031-export-by-composition.md)."""

    route: str  # appended to /api/<module>, naming {user_id}: "/{user_id}", "?user_id={user_id}"
    # The user's own record (one, not pages): the export is served under this module's
    # prefix, and this route says whether the caller may see the user at all.
    record: bool = False
    # Which of the module's lists this is, when it declares more than one: the export names
    # it "<module>.<part>" ("notifications.contacts"); the first list is just "<module>".
    part: str = ""

    def key(self, module: str) -> str:
        return f"{module}.{self.part}" if self.part else module


@dataclass(frozen=True)
class Module:
    name: str
    publishes: tuple[type[Event], ...]
    subscribes: tuple[type[Event], ...]
    open_store: Callable[[str], Store]  # given APP_<NAME>_DB_URL, or a file in the data dir
    assemble: Callable[[ModuleContext], Assembly]
    description: str = ""
    also_serves: tuple[str, ...] = ()  # other /api/<prefix>es it owns (users: "auth")
    package: str = ""  # where its code lives; app.modules.<name> unless said otherwise
    # Its settings section: a msgspec Struct whose fields are its APP_* names (lowercase,
    # without APP_), handed to it as context.section.
    settings: type[Any] | None = None
    commands: tuple[Command, ...] = ()  # what it adds to `python -m app`
    user_data: tuple[UserData, ...] = ()  # what it holds about a user, for an export
    # How it reads what it subscribes to: its own view of each event, with the versions it
    # accepts (docs/decisions/0027-tolerant-readers.md); an event without one is read whole.
    reads: tuple[type[View], ...] = ()

    def __post_init__(self) -> None:
        events = [view.event for view in self.reads]
        for event in events:
            if event not in self.subscribes:
                raise BoundaryViolation(
                    f"module {self.name!r} has a view of {event_type_name(event)} but does "
                    "not subscribe to it: add it to `subscribes`"
                )
            if events.count(event) > 1:
                raise BoundaryViolation(
                    f"module {self.name!r} has {events.count(event)} views of "
                    f"{event_type_name(event)}: one view per event it subscribes to"
                )

    def view_of(self, event: type[Event]) -> type[View] | type[Event]:
        """What it reads an event it subscribes to through: its view, or the whole event."""
        return next((view for view in self.reads if view.event is event), event)

    @property
    def source_package(self) -> str:
        return self.package or f"app.modules.{self.name}"

    @property
    def boundary(self) -> ModuleSource:
        return ModuleSource(
            name=self.name,
            package=self.source_package,
            events=[event_type_name(event) for event in self.publishes],
        )


GATEWAY = "gateway"  # the owner of every path no module declared
# The /api/<prefix>es the gateway serves itself; it also answers /api/<prefix>/{id}/journey
# under the prefix of each module that publishes events (app/gateway/watch.py).
GATEWAY_PREFIXES = ("admin", "topology", "watch", "benchmarks")


def api_prefix(path: str) -> str | None:
    """ "orders" for /api/orders/…; None for a path outside /api/."""
    return path[5:].partition("/")[0] if path.startswith("/api/") else None


class ApiPrefixes:
    """The one answer to "who owns /api/<prefix>": the module that declared it (its name, or
    one of its `also_serves`), else the gateway. The monolith, a module process, the split
    gateway and its forwarder all ask it."""

    def __init__(self, owners: Mapping[str, str]) -> None:
        self.owners = dict(owners)  # /api/<prefix> -> module

    @classmethod
    def of(cls, modules: Sequence[Module]) -> ApiPrefixes:
        """Each /api/<prefix> has one owner: a module, or the gateway."""
        owners: dict[str, str] = {}
        for module in modules:
            for prefix in (module.name, *module.also_serves):
                if prefix in GATEWAY_PREFIXES or prefix in owners:
                    holder = f"module {owners[prefix]!r}" if prefix in owners else "the gateway"
                    raise BoundaryViolation(
                        f"module {module.name!r} wants /api/{prefix}, which {holder} "
                        "serves already: every /api/<prefix> has one owner"
                    )
                owners[prefix] = module.name
        return cls(owners)

    def module_of(self, path: str) -> str | None:
        """The module serving the path; None when no module does."""
        prefix = api_prefix(path)
        return None if prefix is None else self.owners.get(prefix)

    def owner_of(self, path: str) -> str:
        """The module serving the path, else "gateway"."""
        return self.module_of(path) or GATEWAY
