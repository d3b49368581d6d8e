"""Builds the Litestar app: the gateway around every module's router."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar, Router
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin

from app.gateway.admin import AdminController
from app.gateway.errors import EXCEPTION_HANDLERS
from app.gateway.health import HealthController
from app.gateway.input_rules import check_input
from app.gateway.request_id import RequestIdMiddleware, add_request_id_header
from app.gateway.topology import TopologyController
from app.runtime import Runtime


def module_router(name: str, runtime: Runtime) -> Router:
    running = next(m for m in runtime.modules if m.module.name == name)
    return Router(
        path=f"/api/{name}",
        route_handlers=list(running.assembly.route_handlers),
        dependencies=dict(running.assembly.dependencies),
        tags=[name],
    )


def build_gateway(runtime: Runtime) -> Litestar:
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
            TopologyController,
            AdminController,
            *(module_router(m.module.name, runtime) for m in runtime.modules),
        ],
        lifespan=[lifespan],
        middleware=[RequestIdMiddleware()],
        before_send=[add_request_id_header],
        before_request=check_input,
        logging_config=None,  # `python -m app` configures logging from APP_LOG_LEVEL
        exception_handlers=EXCEPTION_HANDLERS,
        request_max_body_size=runtime.settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="Seams",
            version="0.1.0",
            description="The seed's microservices in one process, behind one gateway.",
            path="/schema",
            render_plugins=[ScalarRenderPlugin()],
        ),
        debug=False,
    )
    app.state.runtime = runtime
    return app
