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
