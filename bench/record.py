"""A benchmark's per-hop figures, written for the live page: `--record` in bench/bus.py (the
hop in process) and bench/split.py (the hop over NATS) puts them into
app/gateway/benchmarks.json, which the gateway serves at GET /api/benchmarks beside the hop
times the page measures live ("the current figures from the last bench/ run").

A hop is one event from its publish to its consumer's handler having run (a no-op handler
here; the live figure also holds the handler's own work). Each script replaces only its own
transport's entry, with the date, the commit and the machine, so the file always says where
each figure came from. Commit the file with the run it records.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from harness import REPO, commit, machine

FIGURES = REPO / "app" / "gateway" / "benchmarks.json"


@dataclass(frozen=True)
class Baseline:
    """What the hop is compared with in the same run (raw pyee, or the hop in process)."""

    name: str
    p50_ms: float
    p99_ms: float
    events_per_second: float


@dataclass(frozen=True)
class Hop:
    transport: str  # "in_process" or "nats"
    p50_ms: float  # publish -> handled, one event at a time
    p99_ms: float
    events_per_second: float  # a burst of events published at once, handled
    events: int  # how many hops were timed
    handler: str  # what the consumer did ("no-op")
    baseline: Baseline | None = None


def record(hop: Hop, *, path: Path = FIGURES) -> Path:
    """Replace the transport's entry in the figures file; keep the other transports'."""
    figures = json.loads(path.read_text()) if path.exists() else {"hops": {}}
    figures["hops"][hop.transport] = {
        **{name: _rounded(value) for name, value in asdict(hop).items()},
        "recorded_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": commit(),
        "cores": os.cpu_count() or 0,
        "machine": machine(),
        "command": " ".join(["python", *sys.argv]),
    }
    path.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    return path


def _rounded(value: object) -> object:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {name: _rounded(inner) for name, inner in value.items()}
    return value
