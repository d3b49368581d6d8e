"""A tiny OTLP/HTTP trace receiver for tests: what every process of the system exported.

`otlp_receiver()` serves POST /v1/traces on a free loopback port (protobuf bodies, gzip or
not, as the SDK's OTLPSpanExporter sends them), decodes each ExportTraceServiceRequest and
keeps every span with its ids, name, kind and the attributes of the resource that sent it
(service.name, seams.process, process.pid). Tests point APP_OTLP_ENDPOINT at `endpoint`
and wait, bounded, with `wait_for`.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

PATH = "/v1/traces"
POLL_SECONDS = 0.05


@dataclass(frozen=True)
class ReceivedSpan:
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    parent_span_id: str | None  # None for a root span
    name: str
    kind: int  # opentelemetry.proto.trace.v1.Span.SpanKind
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    resource: dict[str, Any]  # service.name, seams.process, process.pid, …

    @property
    def process(self) -> str:
        """Which process of the system sent it: its `seams.process` resource attribute."""
        return str(self.resource.get("seams.process", "?"))


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {item.key: _value(item.value) for item in value.kvlist_value.values}
    return getattr(value, kind)


def decode(body: bytes) -> list[ReceivedSpan]:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex() or None,
                        name=span.name,
                        kind=span.kind,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        attributes={a.key: _value(a.value) for a in span.attributes},
                        resource=resource,
                    )
                )
    return spans


class OtlpReceiver:
    def __init__(self, server: ThreadingHTTPServer) -> None:
        self._server = server
        self._lock = threading.Lock()
        self._spans: list[ReceivedSpan] = []
        self.requests = 0
        self.rejected: list[str] = []

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{PATH}"

    @property
    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    def add(self, spans: list[ReceivedSpan]) -> None:
        with self._lock:
            self.requests += 1
            self._spans.extend(spans)

    async def wait_for(
        self, done: Callable[[list[ReceivedSpan]], bool], *, timeout: float
    ) -> list[ReceivedSpan]:
        """Every span received, once `done(spans)` holds; AssertionError after `timeout`."""
        deadline = time.monotonic() + timeout
        while not done(spans := self.spans):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"after {timeout}s, {len(spans)} spans in {self.requests} exports do not "
                    f"make what was awaited: {sorted({s.name for s in spans})}"
                )
            await anyio.sleep(POLL_SECONDS)
        return spans


def _handler(receiver: Callable[[], OtlpReceiver]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if self.path != PATH:
                self.send_error(404)
                return
            if self.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            try:
                spans = decode(body)
            except Exception as error:  # a body we cannot read is the exporter's problem
                receiver().rejected.append(repr(error))
                self.send_error(400)
                return
            receiver().add(spans)
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: a test prints what it needs

    return Handler


@contextmanager
def otlp_receiver() -> Iterator[OtlpReceiver]:
    """The receiver on 127.0.0.1 and a free port, serving from a thread; closed after."""
    holder: list[OtlpReceiver] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(lambda: holder[0]))
    server.daemon_threads = True
    holder.append(OtlpReceiver(server))
    thread = threading.Thread(target=server.serve_forever, name="otlp-receiver", daemon=True)
    thread.start()
    try:
        yield holder[0]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
