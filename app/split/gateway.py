"""`python -m app gateway`: the gateway as its own process, in front of module processes.

It runs no module: it authenticates, limits, tags requests with their id, and forwards each
/api/<prefix> to a live instance of the module that declared the prefix (app/split/forwarding.py),
found through discovery on NATS. Its /ready is 200 only while every module has a live
instance and the broker answers.

Its /schema describes the whole system, as the monolith's does: every module's routes
(served by the module processes) with the gateway's own, in one OpenAPI document.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace

from litestar import Litestar
from litestar.middleware import DefineMiddleware
from litestar.openapi.spec import OpenAPI
from litestar.types import Scope

from app.bus import Watch
from app.gateway.asyncapi import asyncapi_route
from app.gateway.auth import GatewayJWTAuth, Need, identity_middleware
from app.gateway.benchmarks import BenchmarksController
from app.gateway.export import Exports, served_by_gateway
from app.gateway.gateway import front_door
from app.gateway.health import HealthController
from app.gateway.metrics import MetricsController
from app.gateway.openapi import openapi_config
from app.gateway.page import PAGE_ROUTES
from app.gateway.request_context import request_context
from app.gateway.tracing import tracing_plugins
from app.gateway.watch import FlowCallers, watch_routes
from app.kernel.settings import Settings
from app.modules.spec import GATEWAY, ApiPrefixes, Module
from app.split.admin import SPLIT_ADMIN_ROUTES, Fleet
from app.split.credentials import CredentialsOverNats
from app.split.discovery import Directory
from app.split.forwarding import Forwarder, forwarding_route
from app.split.proof import GatewayProof
from app.split.topology import DeclaredTopologyController
from app.split.watch import WatchListener


class GatewayRuntime:
    """What the gateway's shared parts (request ids, metrics, /ready) ask of a runtime."""

    def __init__(self, settings: Settings, modules: Sequence[Module], directory: Directory) -> None:
        self.settings = settings
        self.modules = list(modules)
        self.directory = directory
        self.credentials = CredentialsOverNats(
            settings.bus_url, away_seconds=settings.credentials_away_seconds
        )
        self.prefixes = ApiPrefixes.of(modules)
        # Every module process reports what its bus does (app/split/watch.py): the page's
        # stream and journeys are served here, with each observation's process.
        self.watch = Watch(
            process=GATEWAY,
            replay=settings.watch_replay,
            subscriber_buffer=settings.watch_subscriber_buffer,
            journeys=settings.watch_journeys,
            keep_seconds=settings.watch_keep_seconds,
        )
        self.watch_listener = WatchListener(settings.bus_url, self.watch)

    def owner_of(self, path: str) -> str:
        return self.prefixes.owner_of(path)

    def forwarded(self, path: str) -> bool:
        if served_by_gateway(path):
            return False
        return self.prefixes.module_of(path) is not None

    def token_checked(self, scope: Scope) -> Need:
        """A forwarded request's token, when it sends one, must be valid and names the
        caller; with none it goes on anonymous, and the module decides whether its route
        needs a caller. The gateway's own /api routes, served here (the watch, journeys, admin, the
        topology, the bench figures), need one."""
        path = scope["path"]
        if self.forwarded(path):
            return "optional"
        if served_by_gateway(path) and scope.get("method") != "GET":
            return None  # a 405 or the module's 404, to anyone, as in the monolith
        return "required" if path.startswith("/api/") else None

    async def readiness(self, timeout: float = 2.0) -> dict[str, str]:
        checks = {
            "broker": "ok"
            if self.directory.connected
            else f"failing: the broker NATS {self.directory.nats_url} is away"
        }
        for module in self.modules:
            live = self.directory.live(module.name)
            checks[module.name] = "ok" if live else "failing: no live instance"
        return checks

    async def start(self) -> None:
        await self.directory.start()
        await self.credentials.start()
        await self.watch_listener.start()

    async def stop(self) -> None:
        self.watch.end_streams()
        await self.watch_listener.stop()
        await self.credentials.stop()
        await self.directory.stop()


def build_standalone_gateway(
    settings: Settings,
    modules: Sequence[Module],
    auth: GatewayJWTAuth,
    secret_key: str,
    *,
    system: OpenAPI | None = None,
) -> Litestar:
    """`system`: the OpenAPI document of the whole system (the monolith's, built from the
    same modules), merged into the gateway's own at /schema."""
    if not settings.bus_url.startswith("nats://"):
        raise ValueError(
            "python -m app gateway forwards to module processes found through NATS: "
            "set APP_BUS_URL=nats://HOST:PORT (the same broker the modules use)"
        )
    runtime = GatewayRuntime(
        settings, modules, Directory(settings.bus_url, replicas=settings.nats_replicas)
    )
    proof = GatewayProof(secret_key)
    forwarder = Forwarder(runtime.prefixes.owners, runtime.directory, proof)
    # /api/admin over every module process and replica (app/split/admin.py)
    fleet = Fleet(runtime.directory, proof)

    @asynccontextmanager
    async def lifespan(_app: Litestar) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await forwarder.close()
            await fleet.close()
            await runtime.stop()

    app = Litestar(
        route_handlers=[
            HealthController,
            MetricsController,
            *PAGE_ROUTES,
            *watch_routes([]),  # the journeys: answered by the forwarding route itself
            DeclaredTopologyController,  # for the live page, as the monolith's /api/topology
            BenchmarksController,
            asyncapi_route(modules),  # the events between the module processes
            *SPLIT_ADMIN_ROUTES,
            forwarding_route(forwarder, journeys=runtime.watch, exports=Exports(modules)),
        ],
        on_app_init=[auth.on_app_init],
        lifespan=[lifespan],
        middleware=[
            # request id, module, access log, metrics (and the watch: each API request)
            request_context(runtime.owner_of, runtime.watch),
            *identity_middleware(settings, auth, runtime.credentials, runtime.token_checked),
            DefineMiddleware(FlowCallers, watch=runtime.watch),
        ],
        **front_door(settings),
        openapi_config=openapi_config(
            title="Seams gateway",
            description="The gateway alone; each module's API is served by its process.",
        ),
        plugins=[*tracing_plugins(settings, process=GATEWAY)],
        debug=False,
    )
    app.state.runtime = runtime
    app.state.watch = runtime.watch
    app.state.admin_fleet = fleet
    if system is not None:
        describe_whole_system(app.openapi_schema, system)
    return app


def describe_whole_system(gateway: OpenAPI, system: OpenAPI) -> None:
    """Merge into the gateway's document (before it is first served) every path, schema and
    tag of the system's: where both describe a path, the system's describes what the module
    answers, which is what a client gets through the gateway."""
    gateway.info = replace(
        gateway.info,
        title="Seams (split mode)",
        description=(
            "Every module's API, served by the module processes behind this gateway "
            "(forwarded to a live instance), and the gateway's own routes: one system."
        ),
    )
    gateway.paths = {**(gateway.paths or {}), **(system.paths or {})}
    schemas = gateway.components.schemas
    gateway.components.schemas = {**schemas, **system.components.schemas}
    security = gateway.components.security_schemes or {}
    gateway.components.security_schemes = {**security, **(system.components.security_schemes or {})}
    tags = {tag.name: tag for tag in [*(gateway.tags or []), *(system.tags or [])]}
    gateway.tags = list(tags.values()) or None
