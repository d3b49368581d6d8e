"""Trace context across the bus: an envelope carries the W3C traceparent of the span that
published it, and the consumer's span continues that trace — so one order is one trace
across every module it touches, in process or over a broker.

Spans go to whatever OpenTelemetry tracer provider the process has; without one they cost
next to nothing (the API's no-op tracer).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import ProxyTracerProvider, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

tracer = trace.get_tracer("seams")
_propagator = TraceContextTextMapPropagator()


_enabled = False


def refresh() -> None:
    """Look once (at start) whether the process installed a tracer provider: asking on every
    span reads the environment each time, a tenth of an in-process event."""
    global _enabled
    _enabled = not isinstance(trace.get_tracer_provider(), ProxyTracerProvider)


def tracing() -> bool:
    """Without a tracer provider spans are skipped, not just no-ops (a no-op span still
    costs ~3 µs, a sixth of an in-process event)."""
    return _enabled


def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    context: Context | None = None,
    attributes: dict[str, Any] | None = None,
) -> AbstractContextManager[Any]:
    if not tracing():
        return nullcontext()
    return tracer.start_as_current_span(name, context=context, kind=kind, attributes=attributes)


def current_traceparent() -> str | None:
    if not tracing():
        return None
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent")


def context_of(traceparent: str | None) -> Context:
    """The context an envelope was published in; a fresh one (a new trace) without it, never
    whatever happens to run now — over a broker there is nothing else either."""
    return _propagator.extract({"traceparent": traceparent}) if traceparent else Context()
