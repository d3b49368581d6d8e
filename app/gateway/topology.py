"""The topology, derived from the modules' declarations and the routes they serve — never
drawn by hand, so it cannot drift from the code (rule 4)."""

from __future__ import annotations

import re
from typing import Any

import msgspec
from litestar import Controller, Litestar, Request, get

from app.bus import event_type_name
from app.gateway.export import served_by_gateway
from app.kernel.identity import Caller
from app.kernel.problems import AUTHENTICATED, problems
from app.runtime import Runtime

HIDDEN_METHODS = {"OPTIONS", "HEAD"}


class Route(msgspec.Struct, frozen=True):
    method: str
    path: str


class StoreInfo(msgspec.Struct, frozen=True):
    kind: str
    url: str


class EventInfo(msgspec.Struct, frozen=True):
    type: str
    version: int
    producer: str
    consumers: list[str]
    schema: dict[str, Any]


class ModuleInfo(msgspec.Struct, frozen=True):
    name: str
    description: str
    routes: list[Route]
    store: StoreInfo
    publishes: list[str]
    subscribes: list[str]


class Edge(msgspec.Struct, frozen=True):
    source: str
    target: str
    kind: str  # "http" (gateway to module), "store" (module to its store), "event"
    label: str


class Topology(msgspec.Struct, frozen=True):
    gateway: list[Route]
    modules: list[ModuleInfo]
    events: list[EventInfo]
    edges: list[Edge]


def _routes(app: Litestar, prefixes: list[str]) -> list[Route]:
    """Routes under any of the prefixes; with none, the routes no module owns (the gateway's)."""
    found: list[Route] = []
    owned = [f"/api/{running.module.name}" for running in app.state.runtime.modules]
    for route in app.routes:
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
        under = [p for p in (prefixes or owned) if path == p or path.startswith(f"{p}/")]
        if served_by_gateway(path):
            under = []
        if bool(under) != bool(prefixes):
            continue
        methods = sorted(getattr(route, "methods", set()) - HIDDEN_METHODS)
        found.extend(Route(method=m, path=path) for m in methods)
    return sorted(found, key=lambda r: (r.path, r.method))


def topology_of(app: Litestar, runtime: Runtime) -> Topology:
    modules: list[ModuleInfo] = []
    events: list[EventInfo] = []
    edges: list[Edge] = []
    for running in runtime.modules:
        module = running.module
        prefix = f"/api/{module.name}"
        modules.append(
            ModuleInfo(
                name=module.name,
                description=module.description,
                routes=_routes(app, [prefix]),
                store=StoreInfo(kind=running.store.kind, url=running.store.display_url),
                publishes=[event_type_name(e) for e in module.publishes],
                subscribes=[event_type_name(e) for e in module.subscribes],
            )
        )
        edges.append(Edge(source="gateway", target=module.name, kind="http", label=prefix))
        edges.append(
            Edge(source=module.name, target=f"{module.name}.store", kind="store", label="")
        )
    for running in runtime.modules:
        for event in running.module.publishes:
            consumers = [
                other.module.name for other in runtime.modules if event in other.module.subscribes
            ]
            events.append(
                EventInfo(
                    type=event_type_name(event),
                    version=event.version,
                    producer=running.module.name,
                    consumers=consumers,
                    schema=msgspec.json.schema(event),
                )
            )
            edges.extend(
                Edge(
                    source=running.module.name,
                    target=consumer,
                    kind="event",
                    label=event_type_name(event),
                )
                for consumer in consumers
            )
    return Topology(gateway=_routes(app, []), modules=modules, events=events, edges=edges)


def to_mermaid(topology: Topology) -> str:
    """The architecture's diagram as it exists in the code (client, gateway, modules, their
    stores, the events between them), in Mermaid's flowchart syntax."""
    lines = ["flowchart LR", "  client((client)) -->|HTTP| gateway[API gateway]"]
    for module in topology.modules:
        lines.append(f"  {module.name}[{module.name}]")
        lines.append(f'  {module.name}_store[("{module.name} store<br/>{module.store.kind}")]')
    for edge in topology.edges:
        if edge.kind == "http":
            lines.append(f"  gateway -->|{edge.label}| {edge.target}")
        elif edge.kind == "store":
            lines.append(f"  {edge.source} --> {edge.target.replace('.', '_')}")
        else:
            lines.append(f"  {edge.source} -. {edge.label} .-> {edge.target}")
    return "\n".join(lines) + "\n"


class TopologyController(Controller):
    tags = ["gateway"]

    @get(
        "/api/topology",
        operation_id="getTopology",
        responses=problems(*AUTHENTICATED),
        summary="Modules, routes, stores and event flows, derived from the code",
    )
    async def topology(self, request: Request[Caller, Any, Any]) -> Topology:
        """Admins see where each store lives; everyone else only what kind of store it is."""
        topology = topology_of(request.app, request.app.state.runtime)
        if request.user.is_admin:
            return topology
        hidden = [
            msgspec.structs.replace(m, store=StoreInfo(kind=m.store.kind, url="(admins only)"))
            for m in topology.modules
        ]
        return msgspec.structs.replace(topology, modules=hidden)
