"""APP_TRACING=console (issue 14, point 8): each trace printed as a tree, one line per span,
parent before child, indented by depth; spans that end after their trace was printed, or
whose parent is in another process, still say which trace they belong to."""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags

from app.gateway.tracing import ReadableConsoleExporter

DURATION = re.compile(r"\d+\.\d ms")


class Printed:
    """An exporter behind its own tracer provider (not the process's), printing to a buffer."""

    def __init__(self, **timing: float) -> None:
        self.out = io.StringIO()
        self.exporter = ReadableConsoleExporter(self.out, **timing)
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = provider.get_tracer("test")

    def lines(self) -> list[str]:
        """What was printed, durations replaced by `N ms`."""
        return [DURATION.sub("N ms", line) for line in self.out.getvalue().splitlines()]


@pytest.fixture
def printed() -> Iterator[Printed]:
    # Printed only when asked (force_flush): the test says when a trace is complete.
    made = Printed(settle_seconds=3600, linger_seconds=3600)
    yield made
    made.exporter.shutdown()


def trace_id_of(span: trace.Span) -> str:
    return f"{span.get_span_context().trace_id:032x}"


def test_a_trace_prints_parent_before_child_one_line_each_indented_by_depth(
    printed: Printed,
) -> None:
    tracer = printed.tracer
    with tracer.start_as_current_span("POST /api/orders") as root:
        root.set_attribute("http.status_code", 201)
        with (
            tracer.start_as_current_span("orders placeOrder"),
            tracer.start_as_current_span("orders publish OrderPlaced"),
            tracer.start_as_current_span("payments handle OrderPlaced"),
        ):
            pass
        with tracer.start_as_current_span("POST /api/orders http send") as send:
            send.set_attribute("asgi.event.type", "http.response.start")
        with tracer.start_as_current_span("sql:sqlite read"):
            pass

    printed.exporter.force_flush()

    assert printed.lines() == [
        f"trace {trace_id_of(root)}  POST /api/orders  201  N ms",
        "  orders placeOrder  N ms",
        "    orders publish OrderPlaced  N ms",
        "      payments handle OrderPlaced  N ms",
        "  sql:sqlite read  N ms",
    ]


def test_traces_are_printed_apart_and_a_failed_span_says_so(printed: Printed) -> None:
    tracer = printed.tracer
    with tracer.start_as_current_span("POST /api/users") as first:
        pass
    with tracer.start_as_current_span("payments handle OrderPlaced") as second:
        second.set_status(Status(StatusCode.ERROR, "RuntimeError: read-only"))

    printed.exporter.force_flush()

    assert printed.lines() == [
        f"trace {trace_id_of(first)}  POST /api/users  N ms",
        f"trace {trace_id_of(second)}  payments handle OrderPlaced  N ms"
        "  ERROR RuntimeError: read-only",
    ]


def test_a_span_ending_after_its_trace_was_printed_goes_under_its_parent(
    printed: Printed,
) -> None:
    tracer = printed.tracer
    with (
        tracer.start_as_current_span("POST /api/orders") as root,
        tracer.start_as_current_span("payments handle OrderPlaced") as handle,
    ):
        pass
    printed.exporter.force_flush()
    # A retry of the charge, seconds later, in the context of the handler that started it.
    with tracer.start_as_current_span(
        "sql:sqlite transaction", context=trace.set_span_in_context(handle)
    ):
        pass

    printed.exporter.force_flush()

    assert printed.lines() == [
        f"trace {trace_id_of(root)}  POST /api/orders  N ms",
        "  payments handle OrderPlaced  N ms",
        f"trace {trace_id_of(root)}  (continued)",
        "    sql:sqlite transaction  N ms",
    ]


def test_a_span_whose_parent_is_in_another_process_is_printed_under_its_trace(
    printed: Printed,
) -> None:
    remote = SpanContext(
        trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736,
        span_id=0x00F067AA0BA902B7,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    parent = trace.set_span_in_context(NonRecordingSpan(remote))
    with (
        printed.tracer.start_as_current_span("payments handle OrderPlaced", context=parent),
        printed.tracer.start_as_current_span("sql:sqlite transaction"),
    ):
        pass

    printed.exporter.force_flush()

    assert printed.lines() == [
        "trace 4bf92f3577b34da6a3ce929d0e0e4736  (its parent in another process)",
        "  payments handle OrderPlaced  N ms",
        "    sql:sqlite transaction  N ms",
    ]


def test_a_trace_is_printed_by_itself_once_it_has_gone_quiet() -> None:
    made = Printed(settle_seconds=0.05, linger_seconds=0.05)
    try:
        with made.tracer.start_as_current_span("GET /api/orders"):
            pass
        deadline = time.monotonic() + 5
        while not made.out.getvalue():  # bounded: the printer thread's next look
            assert time.monotonic() < deadline, "the trace was never printed"
            time.sleep(0.01)

        assert [line.split("  ")[1] for line in made.lines()] == ["GET /api/orders"]
    finally:
        made.exporter.shutdown()


def test_after_shutdown_nothing_is_gathered_or_printed() -> None:
    made = Printed()
    made.exporter.shutdown()

    with made.tracer.start_as_current_span("GET /health"):
        pass
    made.exporter.force_flush()

    assert made.out.getvalue() == ""
