"""GET /api/benchmarks: the figures of the last bench/ run, for the live page to show beside
the hop times it measures from the stream (issue 14, point 7: the price of a boundary).

`python bench/bus.py --record` (the hop in process) and `python bench/split.py --record`
(the hop over NATS) write app/gateway/benchmarks.json, committed with the run. A hop is one
event from its publish to its consumer's handler having run; the benchmarks time it with a
no-op handler, so the live figure (which holds the handler's own work, a store write) is
the benchmark's plus what the handler does. Each entry says when, at which commit and on
what machine it was measured: figures from a busy two-core machine are not a promise.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import msgspec
from litestar import Controller, get

from app.kernel.problems import AUTHENTICATED, problems

FIGURES = Path(__file__).with_name("benchmarks.json")


class Baseline(msgspec.Struct, frozen=True):
    """What the hop was compared with in the same run."""

    name: str
    p50_ms: float
    p99_ms: float
    events_per_second: float


class HopFigures(msgspec.Struct, frozen=True):
    transport: str  # in_process | nats
    p50_ms: float  # publish -> handled, one event at a time
    p99_ms: float
    events_per_second: float  # a burst published at once, handled
    events: int  # hops timed
    handler: str  # what the consumer did: no-op
    recorded_at: str
    commit: str
    cores: int
    machine: str
    command: str
    baseline: Baseline | None = None


class Benchmarks(msgspec.Struct, frozen=True):
    hops: dict[str, HopFigures]  # by transport; empty until a bench/ run recorded one


@cache
def recorded(path: Path = FIGURES) -> Benchmarks:
    """The figures file, read once (it changes only with a commit); none recorded when the
    file is missing."""
    if not path.exists():
        return Benchmarks(hops={})
    return msgspec.json.decode(path.read_bytes(), type=Benchmarks)


class BenchmarksController(Controller):
    path = "/api/benchmarks"
    tags = ["gateway"]

    @get(
        "/",
        operation_id="getBenchmarks",
        responses=problems(*AUTHENTICATED),
        summary="The hop's figures from the last bench/ run, in process and over NATS",
        description="Per transport: p50/p99 milliseconds from an event's publish to its "
        "consumer's (no-op) handler having run, events per second, the baseline measured in "
        "the same run, and when, at which commit and on what machine. Recorded by "
        "`python bench/bus.py --record` and `python bench/split.py --record`.",
    )
    async def benchmarks(self) -> Benchmarks:
        return recorded()
