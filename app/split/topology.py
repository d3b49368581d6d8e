"""/api/topology in split mode, served by the gateway process.

The monolith draws its topology from the modules it runs (app/gateway/topology.py): their
routes and their open stores. The gateway process runs no module and opens no store, so it
draws the same picture from the modules' declarations alone: each module, what it publishes
and consumes, an edge per published -> consumed event type, and its store as the module's
own, kept in the module's process. The live page (and `python -m app topology`'s reader)
then shows the same architecture in both modes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from litestar import Controller, Request, get

from app.bus import event_type_name
from app.gateway.topology import Edge, EventInfo, ModuleInfo, StoreInfo, Topology
from app.kernel.identity import Caller
from app.kernel.problems import AUTHENTICATED, problems
from app.modules.spec import Module

PATH = "/api/topology"
# What the gateway process can say of a store it never opens.
IN_ITS_PROCESS = StoreInfo(kind="its own, in its process", url="(in the module's process)")


def declared_topology(modules: Sequence[Module]) -> Topology:
    """Modules, their event edges and stores, from what each module declares."""
    infos = [
        ModuleInfo(
            name=module.name,
            description=module.description,
            routes=[],  # served by the module's processes; the gateway forwards its prefixes
            store=IN_ITS_PROCESS,
            publishes=[event_type_name(event) for event in module.publishes],
            subscribes=[event_type_name(event) for event in module.subscribes],
        )
        for module in modules
    ]
    edges = [
        edge
        for module in modules
        for edge in (
            Edge(source="gateway", target=module.name, kind="http", label=f"/api/{module.name}"),
            Edge(source=module.name, target=f"{module.name}.store", kind="store", label=""),
        )
    ]
    events: list[EventInfo] = []
    for module in modules:
        for event in module.publishes:
            consumers = [other.name for other in modules if event in other.subscribes]
            name = event_type_name(event)
            events.append(
                EventInfo(
                    type=name,
                    version=event.version,
                    producer=module.name,
                    consumers=consumers,
                    schema=msgspec.json.schema(event),
                )
            )
            edges.extend(
                Edge(source=module.name, target=consumer, kind="event", label=name)
                for consumer in consumers
            )
    return Topology(gateway=[], modules=infos, events=events, edges=edges)


class DeclaredTopologyController(Controller):
    tags = ["gateway"]

    @get(
        PATH,
        operation_id="getTopology",
        responses=problems(*AUTHENTICATED),
        summary="Modules, stores and event flows, from the modules' declarations",
    )
    async def topology(self, request: Request[Caller, Any, Any]) -> Topology:
        """What the modules declare; each store is in its module's process."""
        return declared_topology(request.app.state.runtime.modules)
