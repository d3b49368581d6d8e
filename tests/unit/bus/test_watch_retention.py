"""The watch's age bound (APP_WATCH_KEEP_SECONDS, docs/decisions/0035-retention.md): what
is older than it leaves the replay and the journeys when anything is recorded or read, or by
the runtime's purge; journeys let go are counted by reason at /metrics."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from app.bus import Envelope, Event, Watch
from app.bus.envelope import wrap

T0 = 1_800_000_000.0  # seconds since the epoch


class Placed(Event, frozen=True, kw_only=True):
    wire_name = "Placed"
    version = 1

    n: int


def envelope(correlation: str, aggregate: str) -> Envelope:
    return wrap(
        Placed(n=1),
        producer="orders",
        aggregate_id=aggregate,
        sequence=1,
        correlation_id=correlation,
        causation_id=None,
    )


class Clock:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = T0
        monkeypatch.setattr("app.bus.watch.time", SimpleNamespace(time=lambda: self.now))


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return Clock(monkeypatch)


def evicted(reason: str) -> float:
    value = REGISTRY.get_sample_value("seams_watch_journeys_evicted_total", {"reason": reason})
    return value or 0.0


def test_a_journey_and_its_observations_go_once_older_than_the_bound(clock: Clock) -> None:
    watch = Watch(keep_seconds=60, journeys=100)
    before = evicted("age")
    watch.published(envelope("flow-1", "order-1"))
    clock.now += 30
    watch.published(envelope("flow-2", "order-2"))
    assert [j.correlation_id for j in watch.journeys_of("order-1")] == ["flow-1"]

    clock.now += 31  # flow-1 is 61 s old, flow-2 31 s
    assert watch.journeys_of("order-1") == []
    assert [j.correlation_id for j in watch.journeys_of("order-2")] == ["flow-2"]
    assert [o.correlation_id for o in watch.recent()] == ["flow-2"]
    assert watch.sizes()["journeys"] == 1 and watch.sizes()["keep_seconds"] == 60
    assert evicted("age") == before + 1

    clock.now += 3_600  # nothing recorded or read meanwhile: the next read lets it go
    assert watch.sizes()["journeys"] == 0 and watch.recent() == []


def test_the_count_bound_is_counted_apart(clock: Clock) -> None:
    watch = Watch(keep_seconds=3_600, journeys=2)
    before = evicted("count")
    for n in range(5):
        watch.published(envelope(f"flow-{n}", f"order-{n}"))
    assert watch.sizes()["journeys"] == 2
    assert evicted("count") == before + 3


@given(steps=st.lists(st.tuples(st.integers(0, 120), st.booleans()), max_size=30))
def test_nothing_younger_than_the_bound_is_let_go(steps: list[tuple[int, bool]]) -> None:
    """Whatever the pace, a journey or an observation within the bound is still there, and
    none beyond it is shown."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        clock = Clock(monkeypatch)
        watch = Watch(keep_seconds=60, journeys=1_000, replay=1_000)
        opened: dict[str, float] = {}
        for n, (wait, read) in enumerate(steps):
            clock.now += wait
            watch.published(envelope(f"flow-{n}", f"order-{n}"))
            opened[f"flow-{n}"] = clock.now
            if read:
                watch.sizes()
        shown = {o.correlation_id for o in watch.recent()}
        young = {flow for flow, at in opened.items() if clock.now - at <= 60}
        assert shown == young
        for flow in opened:
            kept = watch.journeys_of(f"order-{flow.removeprefix('flow-')}")
            assert bool(kept) == (flow in young)
