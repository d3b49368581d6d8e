"""The Module spec: what a module is, declares and needs. Every module has the same shape."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from litestar.di import Provide
from litestar.types import ControllerRouterHandler

from app.bus import Event, ModuleBus, event_type_name
from app.bus.consumer import Handler
from app.bus.outbox import OutboxSource
from app.kernel.boundaries import ModuleSource
from app.kernel.errors import BoundaryViolation
from app.kernel.identity import CredentialsDirectory, TokenIssuer
from app.kernel.settings import Settings


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
    settings: Settings
    tokens: TokenIssuer  # signs access tokens; only the module owning credentials uses it
    fingerprint_key: bytes  # keys idempotency fingerprints (idempotency.fingerprint_key)


@dataclass
class Assembly:
    """What a module hands back to the composition root once it has built its parts."""

    route_handlers: Sequence[ControllerRouterHandler]  # served under /api/<module name>
    dependencies: Mapping[str, Provide]
    # Routes under other /api/<prefix>es the module declared in `also_serves`.
    also_routes: Mapping[str, Sequence[ControllerRouterHandler]] = field(default_factory=dict)
    handlers: Mapping[type[Event], Handler] = field(default_factory=dict)
    outbox: OutboxSource | None = None
    on_start: Sequence[Callable[[], Awaitable[None]]] = ()
    on_stop: Sequence[Callable[[], Awaitable[None]]] = ()
    # Deletes what is kept only for a while (delivered outbox rows, handled inbox ids,
    # expired idempotency keys) from before the given moment; returns how many went.
    purge: Callable[[datetime], Awaitable[int]] | None = None
    # Operations the command line may run (`python -m app <name>`), by name.
    commands: Mapping[str, Callable[..., Awaitable[Any]]] = field(default_factory=dict)
    # The module owning credentials offers the gateway their current state (app/gateway/auth.py).
    credentials: CredentialsDirectory | None = None


@dataclass(frozen=True)
class Module:
    name: str
    publishes: tuple[type[Event], ...]
    subscribes: tuple[type[Event], ...]
    open_store: Callable[[str], Store]
    assemble: Callable[[ModuleContext], Assembly]
    description: str = ""
    also_serves: tuple[str, ...] = ()  # other /api/<prefix>es it owns (users: "auth")
    package: str = ""  # where its code lives; app.modules.<name> unless said otherwise

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
GATEWAY_PREFIXES = ("admin", "topology")  # the /api/<prefix>es the gateway serves itself


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
