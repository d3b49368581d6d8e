"""The watch: what the bus and the gateway did, kept briefly in memory for people to look at.

Every HTTP request the gateway answers, every envelope the outbox relay hands to the
transport and every consumer's handling of one (handled, failed and retried, dead-lettered,
parked) becomes an `Observation`. The watch keeps the last few in a ring (replayed to a page
that connects), pushes new ones to each subscriber's bounded queue (oldest dropped and
counted when a page does not keep up: a stalled browser never slows the bus), and groups
them by correlation id into journeys (the flow one request started), the last few hundred,
so that an order's flow can be shown from the request to its last notification. Both are
bounded by count and by age (`keep_seconds`, APP_WATCH_KEEP_SECONDS): what is older is let go
when anything is recorded or read, or by the runtime's purge in a quiet process
(docs/decisions/0035-retention.md); journeys let go are counted in
seams_watch_journeys_evicted_total by reason.

Recording is on the bus's hot path: an observation is a plain struct appended to deques and
dicts, with no lock, no JSON and no I/O; encoding happens in whoever reads it. Journeys are a
teaching aid kept in bounded memory, not an audit log: the stores and the outbox are the
record.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec
from prometheus_client import Counter

from app.bus.envelope import Envelope
from app.bus.metrics import WATCH_JOURNEYS_EVICTED

DROPPED = Counter(
    "seams_watch_dropped",
    "Observations a watch subscriber (a page streaming the bus) missed: its buffer was full",
)

REQUEST = "request"
PUBLISHED = "published"
HANDLED = "handled"
FAILED = "failed"  # an attempt failed; it will be retried
DEAD_LETTERED = "dead_lettered"
PARKED = "parked"
KINDS = (REQUEST, PUBLISHED, HANDLED, FAILED, DEAD_LETTERED, PARKED)

STEPS_PER_JOURNEY = 500  # a flow that fans out further keeps its first steps
PUBLISH_TIMES = 10_000  # event id -> when it was published, for the hop times
FLOW_STARTS = 4_096  # request id -> its caller and its request observation
FLOWS_PER_AGGREGATE = 8  # an order placed, cancelled, refunded: a few flows each


class Observation(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """One thing seen. `kind` says which fields are set: a request has method, path, status,
    ms, request_id and user_id; an event has type, event_id, producer, aggregate_id,
    correlation_id, causation_id, trace_id; a consumer's handling adds consumer, attempt, ms,
    hop_ms (publish to handled, when the publish was seen) and error for a failure."""

    kind: str
    seq: int = 0  # numbered by the watch that records it: increasing, never reused
    at: float = 0.0  # epoch milliseconds
    process: str = ""
    correlation_id: str | None = None  # a request's own id; an event's flow
    method: str | None = None
    path: str | None = None
    status: int | None = None
    request_id: str | None = None
    user_id: str | None = None
    type: str | None = None
    event_id: str | None = None
    producer: str | None = None
    consumer: str | None = None
    aggregate_id: str | None = None
    causation_id: str | None = None
    trace_id: str | None = None
    attempt: int | None = None
    ms: float | None = None
    hop_ms: float | None = None
    error: str | None = None


class Journey:
    """One flow: the request that started it (when seen) and what followed, in order."""

    __slots__ = ("aggregates", "correlation_id", "opened_ms", "owner", "request", "steps")

    def __init__(self, correlation_id: str, owner: str | None) -> None:
        self.correlation_id = correlation_id
        self.opened_ms = time.time() * 1000.0
        self.owner = owner  # the caller of the request that started it; None: admins only
        self.request: Observation | None = None
        self.steps: list[Observation] = []
        self.aggregates: list[str] = []

    @property
    def trace_id(self) -> str | None:
        return next((s.trace_id for s in self.steps if s.trace_id), None)


Listener = Callable[[Observation], None]
Visible = Callable[[Observation], bool]


class Subscription:
    """A subscriber's bounded queue: the oldest observation goes when it is full, counted."""

    def __init__(self, watch: Watch, capacity: int, visible: Visible | None) -> None:
        self.capacity = capacity
        self.visible = visible
        self.dropped = 0
        self.closed = False
        self._watch = watch
        self._queue: deque[Observation] = deque()
        self._ready = asyncio.Event()

    def offer(self, observation: Observation) -> None:
        if self.visible is not None and not self.visible(observation):
            return
        queue = self._queue
        if len(queue) >= self.capacity:
            queue.popleft()
            self.dropped += 1
            DROPPED.inc()
        queue.append(observation)
        if not self._ready.is_set():
            self._ready.set()

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def next(self, timeout: float) -> Observation | None:
        """The next observation; None when none came within `timeout` seconds. Raises
        StopAsyncIteration once closed (the client left, or the server stops)."""
        while not self._queue:
            if self.closed:
                raise StopAsyncIteration
            self._ready.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._ready.wait()
            except TimeoutError:
                return None
        if self.closed:
            raise StopAsyncIteration
        return self._queue.popleft()

    async def batch(self, timeout: float, window: float) -> list[Observation] | None:
        """The next observation and whatever else comes within `window` seconds after it,
        at once: a reader then writes once per window instead of once per observation (a
        browser parsing one network chunk per event costs the machine it watches more than
        the event). None when nothing came within `timeout` seconds; StopAsyncIteration
        once closed."""
        first = await self.next(timeout)
        if first is None:
            return None
        if window > 0:
            await asyncio.sleep(window)
        rest = list(self._queue)
        self._queue.clear()
        return [first, *rest]

    def end(self) -> None:
        """No more observations: the reader gets what is queued no more, and stops."""
        self.closed = True
        self._ready.set()

    def close(self) -> None:
        self.end()
        self._watch.unsubscribe(self)


class Watch:
    def __init__(
        self,
        *,
        process: str = "monolith",
        replay: int = 500,
        subscriber_buffer: int = 1_000,
        journeys: int = 200,
        keep_seconds: float = 3_600.0,
    ) -> None:
        self.process = process
        self.subscriber_buffer = subscriber_buffer
        self.journey_limit = journeys
        self.keep_ms = keep_seconds * 1000.0
        self._seq = 0
        self._ring: deque[Observation] = deque(maxlen=replay)
        self._subscribers: list[Subscription] = []
        self._listeners: list[Listener] = []
        # Bounded first in, first out: OrderedDict lets the oldest go in O(1) (a dict's first
        # key is found by skipping the slots of every key deleted before it).
        self._journeys: OrderedDict[str, Journey] = OrderedDict()
        self._by_aggregate: dict[str, list[str]] = {}
        self._published_at: OrderedDict[str, float] = OrderedDict()
        self._owners: OrderedDict[str, str | None] = OrderedDict()
        self._requests: OrderedDict[str, Observation] = OrderedDict()
        self.evicted = 0  # journeys let go to stay within the limit or the age
        self.counts: dict[tuple[str, str], int] = {}  # (consumer, kind) -> how many

    # -- recording (the hot path) -------------------------------------------------------

    def caller(self, request_id: str, user_id: str | None) -> None:
        """The caller of a request that may change something, known once it is
        authenticated and before its handler runs: the owner of any flow it starts."""
        owners = self._owners
        if request_id in owners and owners[request_id] != user_id:
            # A client may choose its request id: two callers sending the same one own
            # neither flow (only admins see it), rather than one seeing the other's.
            user_id = None
        owners[request_id] = user_id
        if len(owners) > FLOW_STARTS:
            owners.popitem(last=False)

    def request(
        self,
        *,
        method: str,
        path: str,
        status: int,
        ms: float,
        request_id: str,
        user_id: str | None,
    ) -> None:
        observation = Observation(
            kind=REQUEST,
            process=self.process,
            correlation_id=request_id,
            method=method,
            path=path,
            status=status,
            ms=round(ms, 3),  # microseconds are all a reader can use
            request_id=request_id,
            user_id=user_id,
        )
        journey = self._journeys.get(request_id)
        if journey is not None:
            journey.request = observation
        else:
            requests = self._requests
            requests[request_id] = observation
            if len(requests) > FLOW_STARTS:
                requests.popitem(last=False)
        self.record(observation)

    def published(self, envelope: Envelope) -> None:
        traceparent = envelope.traceparent
        self.record(
            Observation(
                kind=PUBLISHED,
                process=self.process,
                correlation_id=envelope.correlation_id,
                type=envelope.type,
                event_id=envelope.id,
                producer=envelope.producer,
                aggregate_id=envelope.aggregate_id,
                causation_id=envelope.causation_id,
                trace_id=traceparent[3:35] if traceparent else None,
            )
        )

    def handling(
        self,
        kind: str,
        consumer: str,
        envelope: Envelope,
        *,
        attempt: int,
        ms: float | None = None,
        error: str | None = None,
    ) -> None:
        """A consumer's outcome for an envelope: handled, failed, dead_lettered or parked.
        A handled one says how long after its publish (hop_ms): seen here, or, when another
        process published it, since the envelope was made."""
        now = time.time() * 1000.0
        hop = None
        if kind == HANDLED:
            published = self._published_at.get(envelope.id) or _epoch_ms(envelope.occurred_at)
            if published is not None:
                hop = round(now - published, 3)
        self.record(
            Observation(
                kind=kind,
                at=now,
                process=self.process,
                correlation_id=envelope.correlation_id,
                type=envelope.type,
                event_id=envelope.id,
                producer=envelope.producer,
                consumer=consumer,
                aggregate_id=envelope.aggregate_id,
                causation_id=envelope.causation_id,
                attempt=attempt,
                ms=None if ms is None else round(ms, 3),
                hop_ms=hop,
                error=error,
            )
        )

    def record(self, observation: Observation) -> None:
        """Number it, keep it, hand it to every subscriber and listener. Also takes an
        observation another process made (split mode): it keeps its process and is numbered
        here."""
        now = time.time() * 1000.0
        self._seq += 1
        observation.seq = self._seq
        if not observation.at:
            observation.at = now
        self._ring.append(observation)
        correlation = observation.correlation_id
        if correlation is not None and observation.kind != REQUEST:
            self._in_journey(observation, correlation)
        consumer = observation.consumer
        if consumer is not None:
            key = (consumer, observation.kind)
            self.counts[key] = self.counts.get(key, 0) + 1
        for subscription in self._subscribers:
            subscription.offer(observation)
        for listener in self._listeners:
            listener(observation)

    def _in_journey(self, observation: Observation, correlation: str) -> None:
        journey = self._journeys.get(correlation)
        if observation.kind == PUBLISHED:
            published_at = self._published_at
            published_at[observation.event_id or ""] = observation.at
            if len(published_at) > PUBLISH_TIMES:
                published_at.popitem(last=False)
            if journey is None:
                journey = self._open(correlation)
            aggregate = observation.aggregate_id
            if aggregate is not None and aggregate not in journey.aggregates:
                journey.aggregates.append(aggregate)
                flows = self._by_aggregate.setdefault(aggregate, [])
                flows.append(correlation)
                if len(flows) > FLOWS_PER_AGGREGATE:
                    del flows[0]
        else:
            if journey is None:  # from another process, before its publish was heard of
                journey = self._open(correlation)
            if observation.hop_ms is None and observation.kind == HANDLED:
                published = self._published_at.get(observation.event_id or "")
                if published is not None:
                    observation.hop_ms = round(observation.at - published, 3)
        if len(journey.steps) < STEPS_PER_JOURNEY:
            journey.steps.append(observation)

    def _open(self, correlation: str) -> Journey:
        """A new journey (the oldest goes beyond the limit, with its aggregates' index)."""
        journey = Journey(correlation, self._owners.get(correlation))
        journey.request = self._requests.pop(correlation, None)
        journeys = self._journeys
        journeys[correlation] = journey
        if len(journeys) > self.journey_limit:
            self._evict_oldest("count")
        self.expire()
        return journey

    def expire(self) -> None:
        """Let go what is older than `keep_seconds`: the replay's observations, the journeys
        opened before, the requests waiting for their flow. Cheap when nothing is: each
        structure is oldest first and only its head is looked at."""
        cutoff = time.time() * 1000.0 - self.keep_ms
        ring = self._ring
        while ring and ring[0].at < cutoff:
            ring.popleft()
        requests = self._requests
        while requests and next(iter(requests.values())).at < cutoff:
            requests.popitem(last=False)
        journeys = self._journeys
        while journeys and next(iter(journeys.values())).opened_ms < cutoff:
            self._evict_oldest("age")

    def _evict_oldest(self, reason: str) -> None:
        """The oldest journey goes, with its aggregates' index."""
        _, oldest = self._journeys.popitem(last=False)
        self.evicted += 1
        WATCH_JOURNEYS_EVICTED.labels(reason).inc()
        for aggregate in oldest.aggregates:
            flows = self._by_aggregate.get(aggregate)
            if flows is not None and oldest.correlation_id in flows:
                flows.remove(oldest.correlation_id)
                if not flows:
                    del self._by_aggregate[aggregate]

    # -- reading ------------------------------------------------------------------------

    def owner_of(self, correlation_id: str | None) -> str | None:
        """The caller whose request started the flow; None when unknown or anonymous."""
        if correlation_id is None:
            return None
        journey = self._journeys.get(correlation_id)
        if journey is not None:
            return journey.owner
        return self._owners.get(correlation_id)

    def visible_to(self, user_id: str | None) -> Visible | None:
        """What a caller may see: everything for an admin (user_id None), else their own
        requests and the flows their requests started."""
        if user_id is None:
            return None

        def visible(observation: Observation) -> bool:
            if observation.kind == REQUEST:
                return observation.user_id == user_id
            return self.owner_of(observation.correlation_id) == user_id

        return visible

    def recent(self, visible: Visible | None = None) -> list[Observation]:
        """The last observations kept (oldest first), those `visible` lets through."""
        self.expire()
        if visible is None:
            return list(self._ring)
        return [o for o in self._ring if visible(o)]

    def subscribe(self, visible: Visible | None = None) -> tuple[list[Observation], Subscription]:
        """The replay (the last observations kept) and a subscription for what follows."""
        subscription = Subscription(self, self.subscriber_buffer, visible)
        self._subscribers = [*self._subscribers, subscription]  # record() may be iterating
        return self.recent(visible), subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers = [s for s in self._subscribers if s is not subscription]

    def listen(self, listener: Listener) -> None:
        """Call `listener` with every observation recorded here (split mode: to report them
        to the gateway). It must be quick and never raise."""
        self._listeners = [*self._listeners, listener]

    def end_streams(self) -> None:
        """Close every subscription: the streams reading them end (the server stops)."""
        for subscription in self._subscribers:
            subscription.end()
        self._subscribers = []

    def journeys_of(self, aggregate_id: str) -> list[Journey]:
        """The flows that published an event about this aggregate, oldest first."""
        self.expire()
        found = (self._journeys.get(c) for c in self._by_aggregate.get(aggregate_id, ()))
        return [journey for journey in found if journey is not None]

    @property
    def subscribers(self) -> list[Subscription]:
        return list(self._subscribers)

    def sizes(self) -> dict[str, Any]:
        self.expire()
        return {
            "replay": len(self._ring),
            "replay_limit": self._ring.maxlen,
            "journeys": len(self._journeys),
            "journey_limit": self.journey_limit,
            "journeys_evicted": self.evicted,
            "keep_seconds": self.keep_ms / 1000.0,
            "subscriber_buffer": self.subscriber_buffer,
        }


def _epoch_ms(iso: str) -> float | None:
    try:
        return datetime.fromisoformat(iso).timestamp() * 1000.0
    except ValueError:
        return None
