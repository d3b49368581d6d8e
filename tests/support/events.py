"""A test event and its envelope, for the bus's own tests (no module's contract)."""

from __future__ import annotations

from app.bus import Envelope, Event
from app.bus.envelope import wrap


class Pinged(Event, frozen=True, kw_only=True):
    wire_name = "Pinged"
    version = 1

    n: int


def envelope(n: int, aggregate: str = "a", sequence: int = 1) -> Envelope:
    """Pinged(n) about `aggregate`, the `sequence`-th event of it, in flow "corr"."""
    return wrap(
        Pinged(n=n),
        producer="test",
        aggregate_id=aggregate,
        sequence=sequence,
        correlation_id="corr",
        causation_id=None,
    )
