"""Tracing at the gateway: Litestar's OpenTelemetry plugin opens one server span per
request; each module's routes add a span for the module's handler; the exporter is chosen
by APP_TRACING (docs/decisions/0013-tracing.md).

APP_TRACING=console prints each trace as a tree a person can read (ReadableConsoleExporter),
one line per span, parent before child:

    trace 4bf92f3577b34da6a3ce929d0e0e4736  POST /api/<module>  201  12.3 ms
      <module> <operation>  8.1 ms
        <module> publish <Event>  0.2 ms
          <consumer> handle <Event>  3.0 ms
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from litestar.middleware import ASGIMiddleware
from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin
from litestar.types import ASGIApp, Receive, Scope, Send
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import StatusCode

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
    processor: SpanProcessor | None = None
    if settings.tracing == "console":
        # Each span is handed over as it ends (a list append): the exporter groups them.
        processor = SimpleSpanProcessor(ReadableConsoleExporter())
    elif settings.tracing == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint))
    if processor is not None and not isinstance(trace.get_tracer_provider(), TracerProvider):
        resource = Resource.create(
            {"service.name": "seams", "seams.process": process, "process.pid": os.getpid()}
        )
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(processor)
        trace.set_tracer_provider(provider)
    return [OpenTelemetryPlugin(OpenTelemetryConfig(exclude=["^/metrics$", "^/health$"]))]


@dataclass
class _Gathering:
    """The spans of one trace seen so far, waiting to be printed together."""

    spans: list[ReadableSpan] = field(default_factory=list)
    last_seen: float = 0.0
    root_ended: bool = False  # the span without a parent (the request) has ended


class ReadableConsoleExporter(SpanExporter):
    """Prints each trace as an indented tree, one line per span, parent before child.

    A trace's spans are held until it has gone quiet: `settle_seconds` after its root span
    (the request) ended with no new span, since the events it caused are handled just after
    the answer; `linger_seconds` for a trace whose root is in another process (split mode).
    A span that ends after its trace was printed (a retry, a slow card) is printed later
    under its trace's id, indented below its parent. The ASGI server's "http send" and
    "http receive" spans are left out: three or four per request, saying nothing a learner
    needs."""

    def __init__(
        self,
        out: TextIO | None = None,
        *,
        settle_seconds: float = 0.2,
        linger_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._out = out  # None: whatever sys.stdout is when printing
        self._settle = settle_seconds
        self._linger = linger_seconds
        self._clock = clock
        self._gathering: dict[int, _Gathering] = {}
        self._depths: OrderedDict[int, int] = OrderedDict()  # printed span id -> its depth
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._printer: threading.Thread | None = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._stop.is_set():
            return SpanExportResult.FAILURE  # shut down: nothing is printed any more
        now = self._clock()
        with self._lock:
            for span in spans:
                if span.context is None or _is_asgi_event(span):
                    continue
                gathering = self._gathering.setdefault(span.context.trace_id, _Gathering())
                gathering.spans.append(span)
                gathering.last_seen = now
                gathering.root_ended = gathering.root_ended or span.parent is None
            if self._printer is None and not self._stop.is_set():
                self._printer = threading.Thread(
                    target=self._print_when_quiet, name="console-traces", daemon=True
                )
                self._printer.start()
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Print every trace held now, finished or not."""
        self._print(everything=True)
        return True

    def shutdown(self) -> None:
        self._stop.set()
        if self._printer is not None and self._printer is not threading.current_thread():
            self._printer.join(timeout=2)
        self._print(everything=True)

    def _print_when_quiet(self) -> None:
        while not self._stop.wait(min(self._settle, self._linger) / 2):
            self._print(everything=False)

    def _print(self, *, everything: bool) -> None:
        with self._lock:
            lines = [line for trace_id in self._due(everything) for line in self._tree(trace_id)]
        if lines:
            out = self._out or sys.stdout
            out.write("".join(f"{line}\n" for line in lines))
            out.flush()

    def _due(self, everything: bool) -> list[int]:
        now = self._clock()
        return [
            trace_id
            for trace_id, gathering in self._gathering.items()
            if everything
            or now - gathering.last_seen >= (self._settle if gathering.root_ended else self._linger)
        ]

    def _tree(self, trace_id: int) -> Iterator[str]:
        """The trace's lines; remembers each span's depth for spans that end later."""
        spans = self._gathering.pop(trace_id).spans
        ids = {span_id(span) for span in spans}
        children: dict[int, list[ReadableSpan]] = {}
        tops: list[ReadableSpan] = []
        for span in sorted(spans, key=lambda s: s.start_time or 0):
            parent = span.parent.span_id if span.parent is not None else None
            if parent is not None and parent in ids:
                children.setdefault(parent, []).append(span)
            else:
                tops.append(span)
        for top in tops:
            if top.parent is None:
                yield f"trace {trace_id:032x}  {_line(top)}"
                depth = 0
            else:
                known = self._depths.get(top.parent.span_id)
                where = "continued" if known is not None else "its parent in another process"
                yield f"trace {trace_id:032x}  ({where})"
                depth = 1 if known is None else known + 1
            yield from self._branch(top, depth, children)

    def _branch(
        self, span: ReadableSpan, depth: int, children: dict[int, list[ReadableSpan]]
    ) -> Iterator[str]:
        self._remember(span_id(span), depth)
        if depth:
            yield f"{'  ' * depth}{_line(span)}"
        for child in children.get(span_id(span), []):
            yield from self._branch(child, depth + 1, children)

    def _remember(self, span: int, depth: int) -> None:
        self._depths[span] = depth
        if len(self._depths) > 10_000:  # bounded: only recent spans get late children
            self._depths.popitem(last=False)


def span_id(span: ReadableSpan) -> int:
    return span.context.span_id if span.context is not None else 0


def _is_asgi_event(span: ReadableSpan) -> bool:
    return bool(span.attributes and "asgi.event.type" in span.attributes)


def _line(span: ReadableSpan) -> str:
    """name, the HTTP status of a request, the duration, and the error if it failed."""
    parts = [span.name]
    status_code = span.attributes.get("http.status_code") if span.attributes else None
    if status_code is not None:
        parts.append(str(status_code))
    if span.start_time is not None and span.end_time is not None:
        parts.append(f"{(span.end_time - span.start_time) / 1e6:.1f} ms")
    if span.status.status_code is StatusCode.ERROR:
        parts.append(f"ERROR {span.status.description or ''}".rstrip())
    return "  ".join(parts)
