"""The running system: the bus and every module with its store, started and stopped together."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Protocol

from app.bus import Bus, ModuleBus
from app.bus.metrics import PURGED
from app.kernel.boundaries import verify_boundaries
from app.kernel.identity import CredentialsDirectory, TokenIssuer
from app.kernel.ids import utcnow
from app.kernel.migrations import check_schemas
from app.kernel.sealing import PersonalData
from app.kernel.settings import Settings
from app.kernel.tasks import cancel_and_wait
from app.modules.spec import ApiPrefixes, Assembly, Module, ModuleContext, Store

log = logging.getLogger("app")


@dataclass(frozen=True)
class RunningModule:
    module: Module
    store: Store
    bus: ModuleBus
    assembly: Assembly


def _given(value: float | None, default: float) -> float:
    return default if value is None else value


async def _purge_one(store: str, purge: Callable[[], Awaitable[Mapping[str, int]]]) -> int:
    """One store's purge, counted per kind; a failure is logged, not raised."""
    try:
        counts = await purge()
    except Exception as error:  # retention is housekeeping: one store's failure stops no other
        log.warning("purge of %s failed: %r", store, error)
        return 0
    for kind, rows in counts.items():
        PURGED.labels(store, kind).inc(rows)
    return sum(counts.values())


class Runtime:
    def __init__(
        self,
        settings: Settings,
        bus: Bus,
        modules: Sequence[Module],
        tokens: TokenIssuer,
        fingerprint_key: bytes,
    ) -> None:
        verify_boundaries([module.boundary for module in modules])
        self.prefixes = ApiPrefixes.of(modules)
        self.settings = settings
        self.bus = bus
        self.tokens = tokens
        self._fingerprint_key = fingerprint_key
        # Bound to the keys' owner once assembled (or, in a module process without it,
        # to one over NATS: app/split/module_process.py).
        self.personal_data = PersonalData()
        self.modules = [self._assemble(module) for module in modules]
        keyrings = [m.assembly.keyring for m in self.modules if m.assembly.keyring]
        if keyrings:
            self.personal_data.bind(keyrings[0])
        # Started after the modules, stopped before them: what the composition root adds
        # around them (a module process's announcer, its answers about credentials).
        self.services: list[Service] = []
        self._purger: asyncio.Task[None] | None = None

    def _assemble(self, module: Module) -> RunningModule:
        store = module.open_store(self.settings.store_url(module.name))
        scoped = self.bus.scoped(
            module.name, publishes=module.publishes, subscribes=module.subscribes
        )
        context = ModuleContext(
            module.name,
            store,
            scoped,
            self.settings.for_modules(),
            self.tokens,
            self._fingerprint_key,
            section=None if module.settings is None else self.settings.section(module.settings),
            personal_data=self.personal_data,
        )
        assembly = module.assemble(context)
        for event_type, handler in assembly.handlers.items():
            scoped.subscribe(event_type, handler)
        if assembly.outbox is not None:
            scoped.attach_outbox(assembly.outbox)
        return RunningModule(module, store, scoped, assembly)

    async def start(self) -> None:
        # Before any store opens: a store ahead of the code is refused, and one behind too
        # under APP_ENV=production (docs/decisions/0028-migrations.md); opening migrates.
        stores = [*(running.store for running in self.modules), self.bus.store]
        await check_schemas(stores, self.settings.env)
        for running in self.modules:
            await running.store.open()
            log.info(
                "module %s: store %s at %s",
                running.module.name,
                running.store.kind,
                running.store.display_url,
            )
        await self.bus.start()
        for running in self.modules:
            for hook in running.assembly.on_start:
                await hook()
        for service in self.services:
            await service.start()
        self._purger = asyncio.create_task(self._purge_forever(), name="purge")

    def owner_of(self, path: str) -> str:
        """The module that serves a path (/api/<prefix>/…); else the gateway."""
        return self.prefixes.owner_of(path)

    @property
    def credentials(self) -> CredentialsDirectory | None:
        """Users' current credentials, from the module that owns them; None when no module
        here does (tokens are then checked by their signature alone)."""
        offered = [m.assembly.credentials for m in self.modules if m.assembly.credentials]
        return offered[0] if offered else None

    def command_owner(self, name: str) -> RunningModule:
        """The module offering a command (Module.commands)."""
        for running in self.modules:
            if name in running.assembly.commands:
                return running
        raise LookupError(f"no module offers the command {name!r}")

    async def purge(
        self,
        retention_seconds: float | None = None,
        *,
        dead_letter_retention_seconds: float | None = None,
    ) -> int:
        """Delete what each module, and the bus, keep only for their retention
        (docs/decisions/0010-delivery.md, docs/decisions/0035-retention.md); count each store's
        kinds in seams_purged. A store that fails is logged and the others still go."""
        settings = self.settings
        now = utcnow()
        cutoff = now - timedelta(seconds=_given(retention_seconds, settings.retention_seconds))
        removed = 0
        for running in self.modules:
            if running.assembly.purge is not None:
                purge = partial(running.assembly.purge, cutoff)
                removed += await _purge_one(running.module.name, purge)
        dead_letter_cutoff = now - timedelta(
            seconds=_given(dead_letter_retention_seconds, settings.dead_letter_retention_seconds)
        )

        async def failures() -> Mapping[str, int]:
            return (await self.bus.purge_failures(dead_letter_cutoff)).counts

        self.bus.watch.expire()  # a quiet process records and reads nothing to let go by
        return removed + await _purge_one("bus", failures)

    async def _purge_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.purge_interval_seconds)
            try:
                removed = await self.purge()
            except Exception as error:  # retention is housekeeping: never stop the app for it
                log.warning("purge failed: %r", error)
            else:
                log.info("purge removed %d rows older than the retention", removed)

    async def stop(self) -> None:
        await cancel_and_wait(self._purger)
        for service in reversed(self.services):
            await service.stop()
        for running in reversed(self.modules):
            for hook in running.assembly.on_stop:
                await hook()
        await self.bus.stop()
        for running in self.modules:
            await running.store.close()

    async def readiness(self, timeout: float = 2.0) -> dict[str, str]:
        """'ok' or what failed, for each store, the bus and its transport (the broker)."""
        parts: dict[str, Pingable] = {f"{m.module.name}.store": m.store for m in self.modules}
        parts["bus.store"] = self.bus.store
        parts["bus.transport"] = self.bus.transport
        checks = {part: await _answers(thing, timeout) for part, thing in parts.items()}
        checks["bus"] = "ok" if self.bus.running else "not running"
        return checks


class Service(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Pingable(Protocol):
    async def ping(self) -> None: ...


async def _answers(part: Pingable, timeout: float) -> str:
    try:
        await asyncio.wait_for(part.ping(), timeout)
    except Exception as error:
        return f"failing: {error!r}"
    return "ok"
