"""The running system: the bus and every module with its store, started and stopped together."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from app.bus import Bus, ModuleBus
from app.kernel.boundaries import verify_boundaries
from app.kernel.module import Assembly, Module, ModuleContext, Store
from app.settings import Settings

log = logging.getLogger("app")


@dataclass(frozen=True)
class RunningModule:
    module: Module
    store: Store
    bus: ModuleBus
    assembly: Assembly


class Runtime:
    def __init__(self, settings: Settings, bus: Bus, modules: Sequence[Module]) -> None:
        verify_boundaries([module.boundary for module in modules])
        self.settings = settings
        self.bus = bus
        self.modules = [self._assemble(module) for module in modules]

    def _assemble(self, module: Module) -> RunningModule:
        store = module.open_store(self.settings.store_url(module.name))
        scoped = self.bus.scoped(
            module.name, publishes=module.publishes, subscribes=module.subscribes
        )
        context = ModuleContext(module.name, store, scoped, self.settings.for_modules())
        assembly = module.assemble(context)
        for event_type, handler in assembly.handlers.items():
            scoped.subscribe(event_type, handler)
        if assembly.outbox is not None:
            scoped.attach_outbox(assembly.outbox)
        return RunningModule(module, store, scoped, assembly)

    async def start(self) -> None:
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

    async def stop(self) -> None:
        for running in reversed(self.modules):
            for hook in running.assembly.on_stop:
                await hook()
        await self.bus.stop()
        for running in self.modules:
            await running.store.close()

    async def readiness(self, timeout: float = 2.0) -> dict[str, str]:
        """'ok' or what failed, for each store and the bus."""
        stores = {f"{m.module.name}.store": m.store for m in self.modules}
        stores["bus.store"] = self.bus.store
        checks = {part: await _answers(store, timeout) for part, store in stores.items()}
        checks["bus"] = "ok" if self.bus.running else "not running"
        return checks


async def _answers(store: Store, timeout: float) -> str:
    try:
        await asyncio.wait_for(store.ping(), timeout)
    except Exception as error:
        return f"failing: {error!r}"
    return "ok"
