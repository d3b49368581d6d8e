"""/api/watch and /api/<prefix>/{id}/journey: the bus as a page sees it (issue 14).

The gateway observes the bus (app/bus/watch.py) and owns these routes: no module reads
another's events or stores to tell an order's story. `GET /api/watch/stream` is Server-Sent
Events: the last observations the caller may see, then each new one as it happens. A journey
route sits under the prefix of every module that publishes events (an order's flow under
/api/<its module>/{id}/journey), answered here, never forwarded to the module.

Journeys are kept in memory for the last APP_WATCH_JOURNEYS flows: a teaching aid, not an
audit log. A user sees the flows their own requests started; an admin sees everything.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get
from litestar.datastructures import State
from litestar.handlers import HTTPRouteHandler
from litestar.params import PathParameter
from litestar.response import ServerSentEvent
from litestar.response.sse import ServerSentEventMessage
from litestar.types import ASGIApp, Receive, Scope, Send

from app.bus import Bus, Observation, Subscription, Watch
from app.bus.context import current_request_id
from app.bus.watch import DEAD_LETTERED, FAILED, HANDLED, PARKED
from app.kernel.errors import NotFound
from app.kernel.identity import Caller
from app.kernel.problems import AUTHENTICATED, problems

WATCH_PREFIX = "/api/watch/"
JOURNEY = "journey"
KEPT = (
    "journeys are kept in memory for the last {limit} flows, a teaching aid, not an audit "
    "log; a user sees the flows their own requests started"
)
CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})

AggregateId = Annotated[
    str,
    PathParameter(max_length=64, description="The id of what the flow changed (an order's id)."),
]


def is_journey_path(path: str) -> bool:
    """/api/<prefix>/<id>/journey: the gateway's, under a module's prefix."""
    return path.endswith("/journey") and path.startswith("/api/") and path.count("/") == 4


def watched(path: str) -> bool:
    """Requests the watch records: the API's, not the watch's own (a page reading the
    stream, its state or a journey would fill the stream with itself)."""
    return (
        path.startswith("/api/")
        and not path.startswith(WATCH_PREFIX)
        and not (is_journey_path(path))
    )


class FlowCallers:
    """Tells the watch who sent each request that may change something, once the identity
    middleware has named the caller and before any handler runs: the owner of the flow it
    starts (its correlation id is the request id)."""

    def __init__(self, app: ASGIApp, watch: Watch) -> None:
        self.app = app
        self.watch = watch

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method") in CHANGES:
            request_id = current_request_id.get()
            if request_id is not None:
                caller = scope.get("user")
                self.watch.caller(request_id, caller.id if isinstance(caller, Caller) else None)
        await self.app(scope, receive, send)


class ConsumerCounts(msgspec.Struct, frozen=True, kw_only=True):
    consumer: str
    handled: int
    failed: int  # attempts that failed and were retried
    dead_lettered: int
    parked: int
    # What this process's bus says of it (None where the consumer runs in another process).
    backlog: int | None = None
    paused: bool | None = None
    broken: bool | None = None


class SubscriberState(msgspec.Struct, frozen=True):
    pending: int
    dropped: int


class WatchState(msgspec.Struct, frozen=True, kw_only=True):
    process: str
    consumers: list[ConsumerCounts]
    subscribers: list[SubscriberState]
    dropped: int  # observations the subscribers now open missed, in all
    replay: int
    replay_limit: int
    journeys: int
    journey_limit: int
    journeys_evicted: int
    keep_seconds: float  # observations and journeys older than this are let go
    subscriber_buffer: int


class JourneyOut(msgspec.Struct, frozen=True, kw_only=True):
    aggregate_id: str
    correlation_id: str  # the request that started the first flow kept
    trace_id: str | None
    correlation_ids: list[str]  # every flow kept that published an event about it
    steps: list[Observation]  # each flow's request, then what followed, in order
    retries: int
    dead_letters: int
    note: str


def watch_of(state: State) -> Watch:
    watch: Watch = state.watch
    return watch


def bus_of(state: State) -> Bus | None:
    """The bus of this process, when it runs one (the split gateway runs none)."""
    runtime = state.runtime
    bus = getattr(runtime, "bus", None)
    return bus if isinstance(bus, Bus) else None


def _visibility(caller: Caller, watch: Watch) -> Callable[[Observation], bool] | None:
    return watch.visible_to(caller.owner_filter(None))


# Observations that come within this long of one another leave in one write (50 ms: a
# learner sees no delay, a busy bus costs a page 20 writes a second, not one per event).
BATCH_SECONDS = 0.05


_JSON = msgspec.json.Encoder()


def _encoded(observation: Observation) -> bytes:
    """One observation as a text/event-stream message, the bytes Litestar's
    ServerSentEventMessage would write (id, event, one data line) at a tenth of its cost:
    msgspec writes JSON on one line (a line break in a string is escaped), so it needs no
    splitting, and a page streaming everything costs the server ~1 us an observation
    instead of ~8 (docs/decisions/0034-page-cost.md)."""
    return b"id: %d\r\nevent: %s\r\ndata: %s\r\n\r\n" % (
        observation.seq,
        observation.kind.encode(),
        _JSON.encode(observation),
    )


@dataclass
class _Batch(ServerSentEventMessage):
    """Several observations sent as one chunk (Litestar writes one chunk per item yielded)."""

    body: bytes = b""

    def encode(self) -> bytes:
        return self.body


def _batch(observations: Sequence[Observation]) -> _Batch:
    return _Batch(data=None, body=b"".join(_encoded(o) for o in observations))


async def observations(
    replay: Sequence[Observation], subscription: Subscription, heartbeat: float
) -> AsyncIterator[ServerSentEventMessage]:
    """The stream's messages: the replay, then the new observations, what came within
    BATCH_SECONDS of each other in one write; `dropped` when the subscriber missed some; a
    comment when nothing happened for `heartbeat` seconds. Ends when the subscription is
    closed (the server stops); the client leaving cancels it."""
    try:
        yield ServerSentEventMessage(comment="seams watch", data=None, retry=2000)
        if replay:
            yield _batch(replay)
        reported = 0
        while True:
            try:
                latest = await subscription.batch(heartbeat, BATCH_SECONDS)
            except StopAsyncIteration:
                return
            if subscription.dropped > reported:
                reported = subscription.dropped
                yield ServerSentEventMessage(
                    data=msgspec.json.encode({"dropped": reported}).decode(), event="dropped"
                )
            if latest is None:
                yield ServerSentEventMessage(comment="keep-alive", data=None)
            else:
                yield _batch(latest)
    finally:
        subscription.close()


def _after(last_event_id: str | None, replay: list[Observation]) -> list[Observation]:
    """What a reconnecting EventSource has not seen (its Last-Event-ID); everything when the
    id is not one of this watch's (the server restarted)."""
    if last_event_id is None or not last_event_id.isdigit():
        return replay
    seen = int(last_event_id)
    if replay and seen > replay[-1].seq:
        return replay
    return [observation for observation in replay if observation.seq > seen]


class WatchController(Controller):
    path = "/api/watch"
    tags = ["gateway"]

    @get(
        "/stream",
        operation_id="streamWatch",
        responses=problems(*AUTHENTICATED),
        summary="The bus live, as Server-Sent Events",
        description=(
            "`text/event-stream`. On connect, the last observations kept (APP_WATCH_REPLAY) "
            "that the caller may see, then each new one: `event:` is its kind (`request`, "
            "`published`, `handled`, `failed` (retried), `dead_lettered`, `parked`), `id:` "
            "its sequence number, `data:` the observation as JSON. `event: dropped` with "
            '`{"dropped": n}` says this stream missed n observations in all (it did not keep '
            "up: the oldest are dropped, the bus never waits). A comment every "
            "APP_WATCH_HEARTBEAT_SECONDS keeps a quiet stream open. Users see their own "
            "requests and the flows they started; admins see everything. Send the token in "
            "the Authorization header (a fetch-based reader), never in the URL."
        ),
    )
    async def stream(self, request: Request[Caller, Any, State]) -> ServerSentEvent:
        watch = watch_of(request.app.state)
        replay, subscription = watch.subscribe(_visibility(request.user, watch))
        replay = _after(request.headers.get("last-event-id"), replay)
        heartbeat = request.app.state.runtime.settings.watch_heartbeat_seconds
        return ServerSentEvent(observations(replay, subscription, heartbeat))

    @get(
        "/state",
        operation_id="getWatchState",
        responses=problems(*AUTHENTICATED),
        summary="Per consumer: events handled, retried, dead-lettered, parked; its backlog",
        description=(
            "Counts since this process started, as the watch saw them. `backlog`, `paused` "
            "and `broken` come from this process's bus (null for a consumer running in "
            "another process). `subscribers`: each open stream's queue and what it dropped."
        ),
    )
    async def state(self, request: Request[Caller, Any, State]) -> WatchState:
        watch = watch_of(request.app.state)
        bus = bus_of(request.app.state)
        names = {consumer for consumer, _kind in watch.counts}
        local = set(bus.consumers()) if bus is not None else set()
        subscribers = [SubscriberState(s.pending, s.dropped) for s in watch.subscribers]
        return WatchState(
            process=watch.process,
            consumers=[_counts(watch, bus, name, name in local) for name in sorted(names | local)],
            subscribers=subscribers,
            dropped=sum(s.dropped for s in subscribers),
            **watch.sizes(),
        )


def _counts(watch: Watch, bus: Bus | None, consumer: str, local: bool) -> ConsumerCounts:
    counts = watch.counts
    state = bus.consumer_state(consumer) if bus is not None and local else None
    return ConsumerCounts(
        consumer=consumer,
        handled=counts.get((consumer, HANDLED), 0),
        failed=counts.get((consumer, FAILED), 0),
        dead_lettered=counts.get((consumer, DEAD_LETTERED), 0),
        parked=counts.get((consumer, PARKED), 0),
        backlog=state.backlog if state else None,
        paused=state.paused if state else None,
        broken=state.broken if state else None,
    )


def journey_of(watch: Watch, aggregate_id: str, caller: Caller) -> JourneyOut:
    """The flows kept that published an event about the aggregate and that the caller may
    see, each its request first, then its events and their handling in the order seen."""
    flows = [
        journey for journey in watch.journeys_of(aggregate_id) if caller.may_see(journey.owner)
    ]
    if not flows:
        raise NotFound(
            f"no journey of {aggregate_id!r} is kept for you: "
            + KEPT.format(limit=watch.journey_limit)
        )
    steps: list[Observation] = []
    for journey in flows:
        if journey.request is not None:
            steps.append(journey.request)
        steps.extend(journey.steps)
    return JourneyOut(
        aggregate_id=aggregate_id,
        correlation_id=flows[0].correlation_id,
        trace_id=next((j.trace_id for j in flows if j.trace_id), None),
        correlation_ids=[journey.correlation_id for journey in flows],
        steps=steps,
        retries=sum(1 for s in steps if s.kind == FAILED),
        dead_letters=sum(1 for s in steps if s.kind == DEAD_LETTERED),
        note=KEPT.format(limit=watch.journey_limit).capitalize() + ".",
    )


def journey_route(prefix: str) -> HTTPRouteHandler:
    """GET /api/<prefix>/{aggregate_id}/journey, the gateway's."""
    words = "".join(part.capitalize() for part in prefix.replace("-", "_").split("_"))

    @get(
        f"/api/{prefix}/{{aggregate_id:str}}/{JOURNEY}",
        operation_id=f"get{words}Journey",
        responses=problems(*AUTHENTICATED, 404),
        summary=f"The flow of one of /api/{prefix}: request, events, handling, retries",
        description=(
            "In causal order: the HTTP request that started each flow, each event published "
            "about it and each consumer's handling (module, process, attempt, ms, hop_ms: "
            "publish to handled), retries and dead letters, with the trace and correlation "
            "ids. Served by the gateway, which observes the bus, not by the module. 404 when "
            "unknown or not yours: " + KEPT.format(limit="APP_WATCH_JOURNEYS") + "."
        ),
        tags=["gateway"],
        name=f"journey:{prefix}",
    )
    async def journey(
        request: Request[Caller, Any, State], aggregate_id: AggregateId
    ) -> JourneyOut:
        return journey_of(watch_of(request.app.state), aggregate_id, request.user)

    return journey


def watch_routes(journey_prefixes: Sequence[str]) -> list[Any]:
    """The watch's controller and a journey route under each prefix given (the modules that
    publish events)."""
    return [WatchController, *(journey_route(prefix) for prefix in journey_prefixes)]
