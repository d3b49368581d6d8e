"""Tracing at the gateway: Litestar's OpenTelemetry plugin opens one server span per
request; each module's routes add a span for the module's handler; the exporter is chosen
by APP_TRACING (docs/decisions/0013-tracing.md)."""

from __future__ import annotations

import os
from typing import Any

from litestar.middleware import ASGIMiddleware
from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin
from litestar.types import ASGIApp, Receive, Scope, Send
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from app.kernel.settings import Settings

tracer = trace.get_tracer("seams.gateway")


class ModuleSpanMiddleware(ASGIMiddleware):
    """A span for the module's own handler, under the gateway's request span."""

    def __init__(self, module: str) -> None:
        self.module = module

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        handler: Any = scope.get("route_handler")
        operation = getattr(handler, "operation_id", None) or scope["path"]
        with tracer.start_as_current_span(
            f"{self.module} {operation}", attributes={"seams.module": self.module}
        ):
            await next_app(scope, receive, send)


def tracing_plugins(settings: Settings, *, process: str) -> list[OpenTelemetryPlugin]:
    """Instrument the app unless tracing is off; install an exporter if asked to. `process`
    names what this process runs (monolith, gateway, or its modules in split mode), so a
    trace that crosses processes says where each span came from."""
    if settings.tracing == "off":
        return []
    exporter: SpanExporter | None = None
    if settings.tracing == "console":
        exporter = ConsoleSpanExporter()
    elif settings.tracing == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=settings.otlp_endpoint)
    if exporter is not None and not isinstance(trace.get_tracer_provider(), TracerProvider):
        resource = Resource.create(
            {"service.name": "seams", "seams.process": process, "process.pid": os.getpid()}
        )
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
    return [OpenTelemetryPlugin(OpenTelemetryConfig(exclude=["^/metrics$", "^/health$"]))]
