"""/health: the process answers. /ready: every module's store answers and the bus runs."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, Response, get

from app.gateway.errors import problem
from app.kernel.problems import problems
from app.runtime import Runtime


class Health(msgspec.Struct):
    status: str


class Readiness(msgspec.Struct):
    status: str
    checks: dict[str, str]


class HealthController(Controller):
    tags = ["gateway"]
    include_in_schema = True

    @get("/health", operation_id="health", summary="The process is alive", security=[{}])
    async def health(self) -> Health:
        return Health(status="ok")

    @get(
        "/ready",
        operation_id="ready",
        security=[{}],
        responses=problems(503),
        summary="Every store answers and the bus runs (503 names what fails)",
    )
    async def ready(self, request: Request[Any, Any, Any]) -> Response[Any]:
        runtime: Runtime = request.app.state.runtime
        checks = await runtime.readiness()
        failing = [part for part, state in checks.items() if state != "ok"]
        if failing:
            return problem(
                request,
                503,
                "Not ready",
                f"not ready: {', '.join(failing)}",
                checks=checks,
            )
        return Response(Readiness(status="ready", checks=checks))
