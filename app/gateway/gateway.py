"""Builds the Litestar app: the gateway around every module's router."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from litestar import Litestar, Router
from litestar.config.cors import CORSConfig
from litestar.middleware import DefineMiddleware
from litestar.types import ControllerRouterHandler, Middleware, OnAppInitHandler

from app.gateway.admin import AdminController
from app.gateway.asyncapi import asyncapi_route
from app.gateway.auth import GatewayJWTAuth, identity_middleware, protected
from app.gateway.benchmarks import BenchmarksController
from app.gateway.errors import EXCEPTION_HANDLERS
from app.gateway.export import Exports
from app.gateway.faults import FaultsController
from app.gateway.health import HealthController
from app.gateway.input_rules import check_input
from app.gateway.metrics import MetricsController
from app.gateway.openapi import StrictStructSchemaPlugin, openapi_config
from app.gateway.page import PAGE_ROUTES
from app.gateway.request_context import request_context
from app.gateway.request_id import add_request_id_header
from app.gateway.topology import TopologyController
from app.gateway.tracing import ModuleSpanMiddleware, tracing_plugins
from app.gateway.watch import FlowCallers, watch_routes
from app.kernel.errors import BoundaryViolation
from app.kernel.settings import Settings
from app.runtime import RunningModule, Runtime


def module_routers(running: RunningModule, *, traced: bool = True) -> list[Router]:
    """The module's routes under /api/<name> (and the prefixes it also serves), with its
    dependencies registered on its own routers only, and a span around its handlers when
    tracing is on (with tracing off even a no-op span costs every request)."""
    name = running.module.name
    mounts = {name: running.assembly.route_handlers, **running.assembly.also_routes}
    undeclared = set(mounts) - {name, *running.module.also_serves}
    if undeclared:
        raise BoundaryViolation(
            f"module {name!r} mounts /api/{', /api/'.join(sorted(undeclared))} without "
            "declaring it in `also_serves`"
        )
    return [
        Router(
            path=f"/api/{prefix}",
            route_handlers=list(handlers),
            dependencies=dict(running.assembly.dependencies),
            middleware=[ModuleSpanMiddleware(name)] if traced else [],
            tags=[name],
        )
        for prefix, handlers in mounts.items()
    ]


def front_door(settings: Settings) -> dict[str, Any]:
    """What every gateway app shares, the monolith's, a module process's and the gateway
    process's: CORS, the request id on every answer, one error shape, the body limit."""
    return {
        "cors_config": (
            CORSConfig(allow_origins=settings.cors_origin_list)
            if settings.cors_origin_list
            else None
        ),
        "before_send": [add_request_id_header],
        "logging_config": None,  # `python -m app` configures logging from APP_LOG_LEVEL
        "exception_handlers": EXCEPTION_HANDLERS,
        "request_max_body_size": settings.max_body_bytes,
    }


@dataclass(frozen=True)
class Entrance:
    """How requests come into a gateway app, the one thing that differs between the
    monolith's and a split module process's (app/split/module_process.py)."""

    identity: Sequence[Middleware]  # who the caller is: a bearer token, or the gateway's proof
    own_routes: Sequence[ControllerRouterHandler]  # the gateway's, beside health and metrics
    on_app_init: Sequence[OnAppInitHandler] = ()
    process: str = "monolith"  # how its spans name the process
    watched: bool = False  # tells the bus's watch each request and its caller (the public one)


def public_entrance(runtime: Runtime, auth: GatewayJWTAuth) -> Entrance:
    """The monolith's: it authenticates callers itself and serves the topology, admin and
    the watch (the bus live, and the journey of what each publishing module's events are
    about)."""
    publishing = [running.module.name for running in runtime.modules if running.module.publishes]
    return Entrance(
        identity=identity_middleware(runtime.settings, auth, runtime.credentials, protected(auth)),
        own_routes=[
            TopologyController,
            AdminController,
            FaultsController,
            BenchmarksController,
            *PAGE_ROUTES,
            *watch_routes(publishing),
            *Exports([running.module for running in runtime.modules]).routes(),
            asyncapi_route([running.module for running in runtime.modules]),
        ],
        on_app_init=[auth.on_app_init],
        watched=True,
    )


def build_gateway(runtime: Runtime, entrance: Entrance) -> Litestar:
    """The gateway around the runtime's modules: their routes under /api/<prefix>, health,
    metrics, and what the entrance adds."""
    settings = runtime.settings
    traced = settings.tracing != "off"
    watch = runtime.bus.watch if entrance.watched else None

    @asynccontextmanager
    async def lifespan(_app: Litestar) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = Litestar(
        route_handlers=[
            HealthController,
            MetricsController,
            *entrance.own_routes,
            *(
                router
                for running in runtime.modules
                for router in module_routers(running, traced=traced)
            ),
        ],
        on_app_init=list(entrance.on_app_init),
        lifespan=[lifespan],
        middleware=[
            # request id, module, access log, metrics (and the watch: each API request)
            request_context(runtime.owner_of, watch),
            *entrance.identity,
            *([DefineMiddleware(FlowCallers, watch=watch)] if watch else []),
        ],
        before_request=check_input,
        **front_door(settings),
        openapi_config=openapi_config(
            title="Seams",
            description=(
                "A classic microservice architecture (an API gateway in front of services "
                "that each keep their own database and talk through events on a bus) running "
                "as one process: each tag below is one service."
            ),
        ),
        plugins=[StrictStructSchemaPlugin(), *tracing_plugins(settings, process=entrance.process)],
        debug=False,
    )
    app.state.runtime = runtime
    app.state.watch = runtime.bus.watch
    return app
