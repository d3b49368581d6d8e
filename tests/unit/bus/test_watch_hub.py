"""The watch on its own: a bounded replay, subscribers that drop their oldest and count it,
journeys kept for the last N flows, and who may see what."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from app.bus import Envelope, Event, Observation, Watch
from app.bus.envelope import wrap
from app.bus.watch import HANDLED

pytestmark = pytest.mark.anyio


class Placed(Event, frozen=True, kw_only=True):
    wire_name = "Placed"
    version = 1

    n: int


def envelope(correlation: str, aggregate: str = "order-1", n: int = 1) -> Envelope:
    return wrap(
        Placed(n=n),
        producer="orders",
        aggregate_id=aggregate,
        sequence=n,
        correlation_id=correlation,
        causation_id=None,
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )


def flow(watch: Watch, correlation: str, owner: str | None, aggregate: str) -> Envelope:
    """A request by `owner` that published one event, which payments handled."""
    watch.caller(correlation, owner)
    placed = envelope(correlation, aggregate)
    watch.published(placed)
    watch.handling(HANDLED, "payments", placed, attempt=1, ms=1.5)
    watch.request(
        method="POST",
        path="/api/orders",
        status=201,
        ms=3.0,
        request_id=correlation,
        user_id=owner,
    )
    return placed


def dropped_total() -> float:
    return REGISTRY.get_sample_value("seams_watch_dropped_total") or 0.0


async def test_the_replay_keeps_only_the_last_n_in_order() -> None:
    watch = Watch(replay=3)
    for n in range(5):
        watch.published(envelope("c", n=n))
    replay, _ = watch.subscribe()
    assert [o.seq for o in replay] == [3, 4, 5]
    assert all(
        o.kind == "published" and o.trace_id == "0af7651916cd43dd8448eb211c80319c" for o in replay
    )


async def test_a_full_subscriber_drops_its_oldest_and_counts_it() -> None:
    watch = Watch(subscriber_buffer=2)
    _, subscription = watch.subscribe()
    before = dropped_total()
    for n in range(5):
        watch.published(envelope("c", n=n))
    assert subscription.dropped == 3
    assert dropped_total() - before == 3
    kept = [await subscription.next(0.1) for _ in range(2)]
    assert [o.seq for o in kept if o] == [4, 5]
    assert await subscription.next(0.01) is None  # nothing more: a heartbeat's turn


async def test_a_subscriber_is_woken_by_what_is_recorded_after_it_waits() -> None:
    watch = Watch()
    _, subscription = watch.subscribe()
    waiting = asyncio.create_task(subscription.next(5))
    await asyncio.sleep(0)
    watch.published(envelope("c"))
    got = await asyncio.wait_for(waiting, 1)
    assert got is not None and got.type == "Placed"


async def test_ending_the_streams_stops_a_waiting_reader_and_unsubscribes() -> None:
    watch = Watch()
    _, subscription = watch.subscribe()
    waiting = asyncio.create_task(subscription.next(30))
    await asyncio.sleep(0)
    watch.end_streams()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiting, 1)
    assert watch.subscribers == []
    watch.published(envelope("c"))  # nobody is offered it any more
    assert subscription.pending == 0


async def test_a_journey_is_the_request_then_its_events_with_the_hop_time() -> None:
    watch = Watch()
    flow(watch, "req-1", "ada", "order-1")
    [journey] = watch.journeys_of("order-1")
    assert journey.owner == "ada"
    assert journey.request is not None and journey.request.status == 201
    published, handled = journey.steps
    assert (published.kind, handled.kind, handled.consumer) == ("published", "handled", "payments")
    assert handled.hop_ms is not None and handled.hop_ms >= 0
    assert journey.trace_id == "0af7651916cd43dd8448eb211c80319c"


async def test_journeys_beyond_the_limit_are_evicted_oldest_first() -> None:
    watch = Watch(journeys=2)
    for n in range(3):
        flow(watch, f"req-{n}", "ada", f"order-{n}")
    assert watch.journeys_of("order-0") == []
    assert [j.correlation_id for j in watch.journeys_of("order-2")] == ["req-2"]
    assert watch.sizes()["journeys"] == 2
    assert watch.evicted == 1


async def test_an_aggregate_changed_by_two_requests_has_both_flows_in_order() -> None:
    watch = Watch()
    flow(watch, "place", "ada", "order-1")
    flow(watch, "cancel", "ada", "order-1")
    assert [j.correlation_id for j in watch.journeys_of("order-1")] == ["place", "cancel"]


async def test_a_user_sees_their_own_flows_an_admin_all_an_unowned_flow_only_admins() -> None:
    watch = Watch()
    flow(watch, "ada-req", "ada", "order-a")
    flow(watch, "bob-req", "bob", "order-b")
    watch.published(envelope("sweep-after-restart", "order-c"))  # no request seen

    def correlations(user: str | None) -> set[str | None]:
        replay, _ = watch.subscribe(watch.visible_to(user))
        return {o.correlation_id for o in replay}

    assert correlations("ada") == {"ada-req"}
    assert correlations(None) == {"ada-req", "bob-req", "sweep-after-restart"}
    assert watch.owner_of("sweep-after-restart") is None


async def test_a_live_subscriber_gets_only_what_it_may_see() -> None:
    watch = Watch()
    _, ada = watch.subscribe(watch.visible_to("ada"))
    flow(watch, "bob-req", "bob", "order-b")
    flow(watch, "ada-req", "ada", "order-a")
    seen = []
    while (observation := await ada.next(0.01)) is not None:
        seen.append(observation)
    assert {o.correlation_id for o in seen} == {"ada-req"}
    assert [o.kind for o in seen] == ["published", "handled", "request"]


async def test_two_callers_sending_one_request_id_own_neither_flow() -> None:
    watch = Watch()
    watch.caller("chosen-by-client", "ada")
    watch.caller("chosen-by-client", "mallory")
    watch.published(envelope("chosen-by-client"))
    assert watch.owner_of("chosen-by-client") is None


async def test_an_observation_from_another_process_is_numbered_here_and_keeps_its_process() -> None:
    watch = Watch(process="gateway")
    placed = envelope("req")
    watch.published(placed)
    remote = Observation(
        kind=HANDLED,
        process="payments",
        seq=41,
        correlation_id="req",
        event_id=placed.id,
        consumer="payments",
        type=placed.type,
        aggregate_id=placed.aggregate_id,
        attempt=1,
        ms=2.0,
    )
    watch.record(remote)
    [journey] = watch.journeys_of(placed.aggregate_id)
    assert [(o.seq, o.process) for o in journey.steps] == [(1, "gateway"), (2, "payments")]
    assert journey.steps[1].hop_ms is not None
    assert watch.counts[("payments", HANDLED)] == 1


async def test_a_handling_heard_before_its_publish_joins_the_flow_hop_from_the_envelope() -> None:
    gateway = Watch(process="gateway")
    payments = Watch(process="payments")  # another process: it never saw the publish
    placed = envelope("req")
    payments.handling(HANDLED, "payments", placed, attempt=1, ms=1.0)
    [handled] = payments.recent()
    assert handled.hop_ms is not None and handled.hop_ms >= 0  # since the envelope was made
    gateway.record(handled)  # heard before the publish, from another connection
    gateway.published(placed)
    [journey] = gateway.journeys_of(placed.aggregate_id)
    assert [o.kind for o in journey.steps] == ["handled", "published"]
