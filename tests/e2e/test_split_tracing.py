"""Split mode: a flow is one trace with spans from the gateway process and every module
process it reaches, linked through the forwarded request's traceparent (gateway → module)
and the envelope's (module → module over NATS).

Every process exports over OTLP/HTTP (APP_TRACING=otlp) to a receiver this test runs
(tests/support/otlp.py); each says which process it is in its resource (`seams.process`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from tests.support.otlp import ReceivedSpan, otlp_receiver
from tests.support.split import split_system

pytestmark = [pytest.mark.anyio, pytest.mark.services, pytest.mark.split, pytest.mark.slow]

ARRIVAL_SECONDS = 30.0
TRACING = {
    "APP_TRACING": "otlp",
    "OTEL_BSP_SCHEDULE_DELAY": "200",  # ms; the SDK's default batches every 5 s
}
# The spans an order's flow must have, by the process each comes from.
ORDER_FLOW = {
    "orders placeOrder": "orders",
    "orders publish OrderPlaced": "orders",
    "payments handle OrderPlaced": "payments",
    "payments publish PaymentSucceeded": "payments",
    "orders handle PaymentSucceeded": "orders",
    "notifications handle PaymentSucceeded": "notifications",
}
REGISTRATION_FLOW = {
    "users registerUser": "users",
    "users publish UserRegistered": "users",
    "orders handle UserRegistered": "orders",
    "notifications handle UserRegistered": "notifications",
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def root_of(spans: Sequence[ReceivedSpan], name: str) -> ReceivedSpan:
    """The gateway's request span for the one request of that name."""
    [root] = [
        s for s in spans if s.name == name and s.parent_span_id is None and s.process == "gateway"
    ]
    return root


def trace_of(spans: Sequence[ReceivedSpan], root: ReceivedSpan) -> list[ReceivedSpan]:
    return [s for s in spans if s.trace_id == root.trace_id]


def the(spans: Sequence[ReceivedSpan], name: str) -> ReceivedSpan:
    [found] = [s for s in spans if s.name == name]
    return found


def chain(span: ReceivedSpan, by_id: dict[str, ReceivedSpan]) -> list[ReceivedSpan]:
    """The span and its ancestors, root first."""
    path = [span]
    while span.parent_span_id is not None and span.parent_span_id in by_id:
        span = by_id[span.parent_span_id]
        path.insert(0, span)
    return path


def processes_along(path: Sequence[ReceivedSpan]) -> list[str]:
    """The processes a path goes through, each once per stay."""
    return [s.process for i, s in enumerate(path) if i == 0 or path[i - 1].process != s.process]


def flow_arrived(flow: dict[str, str]) -> Callable[[list[ReceivedSpan]], bool]:
    """Every span the flow must have was received, in whichever trace: whether they share
    one is what the test asserts."""

    def arrived(spans: list[ReceivedSpan]) -> bool:
        return set(flow) <= {s.name for s in spans}

    return arrived


def assert_whole_trace(in_trace: Sequence[ReceivedSpan], root: ReceivedSpan) -> None:
    """One root, the gateway's request span; every other span's parent is in the trace."""
    by_id = {s.span_id: s for s in in_trace}
    assert len(by_id) == len(in_trace), "span ids are unique"
    orphans = [
        (s.process, s.name) for s in in_trace if s is not root and s.parent_span_id not in by_id
    ]
    assert [s for s in in_trace if s.parent_span_id is None] == [root]
    assert orphans == [], orphans


async def test_an_order_in_split_mode_is_one_trace_across_every_process(tmp_path: Path) -> None:
    with otlp_receiver() as receiver:
        async with split_system(tmp_path, APP_OTLP_ENDPOINT=receiver.endpoint, **TRACING) as split:
            user = await split.register("Tia")
            await split.settle()
            order = await split.place(user, "tok_visa")
            # Exported while the system runs: the batch processor sends within ~200 ms.
            await receiver.wait_for(flow_arrived(ORDER_FLOW), timeout=ARRIVAL_SECONDS)
            await split.settle()
            pids = {name: p.process.pid for name, p in split.processes.items()}
        # Every process has stopped (SIGTERM) and flushed what it still held.
        spans = receiver.spans

    assert order["status"] == "PENDING"
    assert receiver.rejected == []
    root = root_of(spans, "POST /api/orders")
    in_trace = trace_of(spans, root)
    by_id = {s.span_id: s for s in in_trace}

    # One trace: every span of the flow is in the root's trace, and in no other.
    flow_traces = {s.trace_id for s in spans if s.name in ORDER_FLOW}
    assert flow_traces == {root.trace_id}
    assert {name: the(in_trace, name).process for name in ORDER_FLOW} == ORDER_FLOW

    # From the gateway process and each module process the flow reaches, told apart by the
    # resource each process exports with (and really separate processes: their own pids).
    assert {s.process for s in in_trace} == {"gateway", "orders", "payments", "notifications"}
    by_process = {s.process: s.resource["process.pid"] for s in in_trace}
    assert by_process == {name: pids[name] for name in by_process}
    assert {s.resource["service.name"] for s in in_trace} == {"seams"}

    # Parent links: one root (the gateway's request span), no span whose parent is missing.
    assert root.kind == 2  # SERVER
    assert_whole_trace(in_trace, root)

    # The boundaries: gateway → orders over HTTP (traceparent forwarded), orders → payments
    # and payments → orders, notifications over NATS (traceparent in the envelope).
    placed = the(in_trace, "orders placeOrder")
    served = by_id[placed.parent_span_id or ""]
    assert (served.process, served.name, served.parent_span_id) == (
        "orders",
        "POST /api/orders",
        root.span_id,
    )
    published = the(in_trace, "orders publish OrderPlaced")
    charged = the(in_trace, "payments handle OrderPlaced")
    succeeded = the(in_trace, "payments publish PaymentSucceeded")
    paid = the(in_trace, "orders handle PaymentSucceeded")
    notified = the(in_trace, "notifications handle PaymentSucceeded")
    assert charged.parent_span_id == published.span_id
    assert paid.parent_span_id == succeeded.span_id
    assert notified.parent_span_id == succeeded.span_id

    # Causal order: gateway, then orders, then payments, then notifications (and orders).
    path = chain(notified, by_id)
    assert path[0] is root
    assert processes_along(path) == ["gateway", "orders", "payments", "notifications"]
    assert processes_along(chain(paid, by_id)) == ["gateway", "orders", "payments", "orders"]
    starts = [root, placed, published, charged, succeeded, notified]
    assert [s.start_ns for s in starts] == sorted(s.start_ns for s in starts)
    assert paid.start_ns > succeeded.start_ns


async def test_a_registration_in_split_mode_is_one_trace_through_users_and_the_replicas(
    tmp_path: Path,
) -> None:
    with otlp_receiver() as receiver:
        async with split_system(tmp_path, APP_OTLP_ENDPOINT=receiver.endpoint, **TRACING) as split:
            await split.register("Uma")
            await receiver.wait_for(flow_arrived(REGISTRATION_FLOW), timeout=ARRIVAL_SECONDS)
            await split.settle()
        spans = receiver.spans

    root = root_of(spans, "POST /api/users")
    in_trace = trace_of(spans, root)
    by_id = {s.span_id: s for s in in_trace}
    assert {s.trace_id for s in spans if s.name in REGISTRATION_FLOW} == {root.trace_id}
    assert {name: the(in_trace, name).process for name in REGISTRATION_FLOW} == REGISTRATION_FLOW
    assert {s.process for s in in_trace} == {"gateway", "users", "orders", "notifications"}
    assert_whole_trace(in_trace, root)
    for replica in ("orders", "notifications"):
        path = chain(the(in_trace, f"{replica} handle UserRegistered"), by_id)
        assert processes_along(path) == ["gateway", "users", replica]
