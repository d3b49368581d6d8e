"""GET /metrics: Prometheus text. HTTP latency and counts per module and route (paths
grouped by route template) are recorded by the gateway's request middleware
(app/gateway/request_context.py) under the names and labels Litestar's Prometheus
middleware used; the bus adds its own counters (app/bus/metrics.py).

Only the scrapers APP_METRICS_ALLOW names (default: loopback) may read them: the routes,
volumes and error rates they show are a map for an attacker.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, MediaType, Response, get
from litestar.connection import ASGIConnection
from litestar.exceptions import PermissionDeniedException
from litestar.handlers import BaseRouteHandler
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from app.kernel.networks import address_set
from app.kernel.problems import problems

APP_NAME = "seams"
# Litestar's labels in Litestar's order, then the module that serves the route.
LABELS = ("method", "path", "status_code", "app_name", "module")

REQUESTS = Counter("seams_requests", "Total requests", LABELS)
ERRORS = Counter("seams_requests_error", "Total errors in requests", LABELS)
DURATION = Histogram("seams_request_duration_seconds", "Request duration, in seconds", LABELS)
IN_PROGRESS = Gauge(
    "seams_requests_in_progress",
    "Total requests currently in progress",
    LABELS,
    multiprocess_mode="livesum",
)


class HttpMetrics:
    """Each series' children looked up once: `labels()` checks and locks on every call, a
    few µs per metric per request."""

    def __init__(self) -> None:
        self._running: dict[tuple[str, str, str], Gauge] = {}
        self._finished: dict[
            tuple[str, str, int, str], tuple[Counter, Histogram, Counter | None]
        ] = {}

    def running(self, method: str, path: str, module: str) -> Gauge:
        """The in-progress gauge of a route (Litestar labels it with status 200)."""
        key = (method, path, module)
        found = self._running.get(key)
        if found is None:
            found = self._running[key] = IN_PROGRESS.labels(method, path, 200, APP_NAME, module)
        return found

    def finished(self, method: str, path: str, module: str, status: int, seconds: float) -> None:
        key = (method, path, status, module)
        found = self._finished.get(key)
        if found is None:
            values = (method, path, status, APP_NAME, module)
            found = self._finished[key] = (
                REQUESTS.labels(*values),
                DURATION.labels(*values),
                ERRORS.labels(*values) if status >= 500 else None,
            )
        count, duration, errors = found
        count.inc()
        duration.observe(seconds)
        if errors is not None:
            errors.inc()


def scrapers_only(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """The client (as the trusted proxies name it) must be one APP_METRICS_ALLOW names."""
    allowed = address_set(connection.app.state.runtime.settings.metrics_allow, "metrics_allow")
    if (connection.client.host if connection.client else None) not in allowed:
        raise PermissionDeniedException(
            "/metrics answers only the scrapers APP_METRICS_ALLOW names (IPs or networks)"
        )


class MetricsController(Controller):
    path = "/metrics"
    tags = ["gateway"]
    guards = [scrapers_only]

    @get(
        "/",
        operation_id="metrics",
        summary="Prometheus metrics: HTTP per module and route, the bus's events and backlog",
        description="Answers only the scrapers APP_METRICS_ALLOW names (default: loopback).",
        media_type=MediaType.TEXT,
        opt={"public": True},  # scraped by Prometheus, which carries no token
        security=[{}],
        responses=problems(403),
        include_in_schema=True,
    )
    async def metrics(self) -> Response[bytes]:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
