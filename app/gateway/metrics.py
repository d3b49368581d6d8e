"""GET /metrics: Prometheus text. HTTP latency and counts per module and route come from
Litestar's Prometheus middleware (paths grouped by route template); the bus adds its own
counters (app/bus/metrics.py)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, MediaType, Request, Response, get
from litestar.plugins.prometheus import PrometheusConfig
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from app.runtime import Runtime


def module_of(request: Request[Any, Any, Any]) -> str:
    runtime: Runtime = request.app.state.runtime
    return runtime.owner_of(request.url.path)


def prometheus() -> PrometheusConfig:
    return PrometheusConfig(
        app_name="seams",
        prefix="seams",
        group_path=True,  # /api/orders/{order_id}, not one series per order
        labels={"module": module_of},
        exclude=["^/metrics$"],
    )


class MetricsController(Controller):
    path = "/metrics"
    tags = ["gateway"]

    @get(
        "/",
        operation_id="metrics",
        summary="Prometheus metrics: HTTP per module and route, the bus's events and backlog",
        media_type=MediaType.TEXT,
        opt={"public": True},  # scraped by Prometheus, which carries no token
        security=[{}],
        include_in_schema=True,
    )
    async def metrics(self) -> Response[bytes]:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
