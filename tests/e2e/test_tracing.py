"""One order's flow is one trace: the gateway's request span, the orders handler, each
publish, and every consumer's handler in payments, orders and notifications, in causal
order (the trace context travels in the envelope)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.support.seams import fast_settings, running

pytestmark = pytest.mark.anyio

_exporter = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The process's tracer provider, recording in memory (it can be set only once)."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_exporter))
        trace.set_tracer_provider(provider)
    _exporter.clear()
    yield _exporter
    _exporter.clear()


def chain(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[str]:
    """The span's ancestors' names, root first."""
    names = [span.name]
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        names.insert(0, span.name)
    return names


async def test_an_order_is_one_trace_across_the_gateway_and_three_modules(
    spans: InMemorySpanExporter,
) -> None:
    async with running(fast_settings(ephemeral="true", tracing="on")) as seams:
        user = await seams.register("Tia")
        spans.clear()
        order = await seams.place(user, "tok_visa")
        await seams.settle()

    finished = spans.get_finished_spans()
    [server] = [s for s in finished if s.name.startswith("POST /api/orders") and s.parent is None]
    trace_id = server.context.trace_id
    in_trace = [s for s in finished if s.context.trace_id == trace_id]
    by_id = {s.context.span_id: s for s in in_trace}
    modules = {s.attributes.get("seams.module") for s in in_trace} - {None}
    assert modules == {"orders", "payments", "notifications"}, sorted(s.name for s in in_trace)

    [notified] = [s for s in in_trace if s.name == "notifications handle PaymentSucceeded"]
    path = chain(notified, by_id)
    assert path[0] == server.name
    expected = [
        "orders placeOrder",
        "orders publish OrderPlaced",
        "payments handle OrderPlaced",
        "payments publish PaymentSucceeded",
        "notifications handle PaymentSucceeded",
    ]
    assert [name for name in path if name in expected] == expected, path
    [paid] = [s for s in in_trace if s.name == "orders handle PaymentSucceeded"]
    assert "payments publish PaymentSucceeded" in chain(paid, by_id)
    assert any(s.name.startswith("sql:") for s in in_trace)  # store operations are spans too
    assert order["status"] == "PENDING"
