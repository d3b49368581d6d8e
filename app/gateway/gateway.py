"""Builds the Litestar app: the gateway around every module's router."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Router
from litestar.config.cors import CORSConfig

from app.gateway.admin import AdminController
from app.gateway.auth import GatewayJWTAuth, identity_middleware, protected
from app.gateway.errors import EXCEPTION_HANDLERS
from app.gateway.health import HealthController
from app.gateway.input_rules import check_input
from app.gateway.metrics import MetricsController
from app.gateway.openapi import StrictStructSchemaPlugin, openapi_config
from app.gateway.proof import BehindGateway, GatewayProofMiddleware
from app.gateway.request_context import request_context
from app.gateway.request_id import add_request_id_header
from app.gateway.topology import TopologyController
from app.gateway.tracing import ModuleSpanMiddleware, tracing_plugins
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


def build_gateway(
    runtime: Runtime, auth: GatewayJWTAuth, *, behind: BehindGateway | None = None
) -> Litestar:
    """The monolith's gateway around every module; with `behind`, a module process of the
    split mode: the same modules' routes, which only the gateway's requests reach."""
    settings = runtime.settings
    traced = settings.tracing != "off"
    process = "monolith" if behind is None else ",".join(m.module.name for m in runtime.modules)

    @asynccontextmanager
    async def lifespan(_app: Litestar) -> AsyncIterator[None]:
        await runtime.start()
        try:
            if behind is not None:
                await behind.announcer.start()
            yield
        finally:
            if behind is not None:
                await behind.announcer.stop()  # the gateway stops sending here first
            await runtime.stop()

    if behind is None:
        own_routes: list[Any] = [TopologyController, AdminController]
        identity: list[Any] = identity_middleware(
            settings, auth, runtime.credentials, protected(auth)
        )
    else:  # the gateway process authenticates, limits and serves the topology
        own_routes = [AdminController]  # this process's bus, for its operators and tests
        identity = [GatewayProofMiddleware(behind.proof)]

    app = Litestar(
        route_handlers=[
            HealthController,
            MetricsController,
            *own_routes,
            *(
                router
                for running in runtime.modules
                for router in module_routers(running, traced=traced)
            ),
        ],
        on_app_init=[auth.on_app_init] if behind is None else [],
        lifespan=[lifespan],
        middleware=[
            request_context(runtime.owner_of),  # request id, module, access log, metrics
            *identity,
        ],
        before_request=check_input,
        **front_door(settings),
        openapi_config=openapi_config(
            title="Seams",
            description="The seed's microservices in one process, behind one gateway.",
        ),
        plugins=[StrictStructSchemaPlugin(), *tracing_plugins(settings, process=process)],
        debug=False,
    )
    app.state.runtime = runtime
    return app
