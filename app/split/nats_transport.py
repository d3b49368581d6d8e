"""The NATS JetStream transport: envelopes cross a broker, so modules can run in separate
processes, and in replicas, without a change to their code.

One stream keeps every event (subjects `<prefix>.<EventType>`, file storage, a duplicate
window so that a relay re-sending an envelope id is stored once). Each consuming module has
one durable pull consumer per event type it handles, named after the module, so replicas of
a module bind the same durable and the broker hands each message to one of them.

A message is acked only once the module's Consumer is done with it (committed to its inbox,
dead-lettered or parked); while the handling runs it is kept alive with in_progress(); one
whose handling is abandoned (the process stops) is nak'ed, and one whose process died is
redelivered after the ack wait. Lanes, retries and dead letters stay in the Consumer.

Pull, not push: replicas scale by binding the same durable and fetching what they have room
for, with no deliver subject or queue group to keep in step, which is the model NATS
recommends for horizontally scaled work; a fetch returns as soon as one message is there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Literal

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from app.bus.context import flow_of
from app.bus.envelope import Envelope, MalformedEvent, decode, encode
from app.bus.transport import Sink
from app.kernel.outage import Outage
from app.split.nats import BrokerPresence, close_quietly, connect, presence

log = logging.getLogger("app.bus.nats")

# Beside Nats-Msg-Id (the broker's dedup key), for tools that look at a message's headers;
# the body, the whole envelope, is what a consumer reads.
TYPE_HEADER = "Seams-Event-Type"
AGGREGATE_HEADER = "Seams-Aggregate-Id"
CORRELATION_HEADER = "Seams-Correlation-Id"
CAUSATION_HEADER = "Seams-Causation-Id"
TRACEPARENT_HEADER = "traceparent"

Outcome = Literal["ack", "nak", "term"]


class BrokerAway(ConnectionError):
    """The broker cannot be reached now: what was to be published waits in its outbox."""


def headers_of(envelope: Envelope) -> dict[str, str]:
    headers = {
        "Nats-Msg-Id": envelope.id,
        TYPE_HEADER: envelope.type,
        AGGREGATE_HEADER: envelope.aggregate_id,
        CORRELATION_HEADER: envelope.correlation_id,
    }
    if envelope.causation_id is not None:
        headers[CAUSATION_HEADER] = envelope.causation_id
    if envelope.traceparent is not None:
        headers[TRACEPARENT_HEADER] = envelope.traceparent
    return headers


def _token(name: str, what: str) -> str:
    """A subject token or durable name: no dots, wildcards or spaces."""
    if not name or any(c in name for c in ".*> \t\r\n"):
        raise ValueError(f"{what} {name!r} cannot be used in a NATS subject or durable name")
    return name


@dataclass(eq=False)
class _Delivery:
    binding: _Binding
    msg: Msg
    taken_at: float


@dataclass(eq=False)
class _Binding:
    consumer: str
    event_type: str
    sink: Sink
    subject: str
    durable: str
    in_flight: set[_Delivery] = field(default_factory=set)
    room: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    subscription: JetStreamContext.PullSubscription | None = None
    declared: bool = False  # the durable exists as far as we know (not after a reconnect)


class NatsTransport:
    name = "nats"

    def __init__(
        self,
        url: str,
        *,
        stream: str = "SEAMS_EVENTS",
        subject_prefix: str = "seams.events",
        ack_wait_seconds: float = 30.0,
        max_deliver: int = 20,
        max_ack_pending: int = 1000,
        max_in_flight: int = 256,
        fetch_batch: int = 64,
        fetch_seconds: float = 5.0,
        duplicate_window_seconds: float = 120.0,
        max_age_seconds: float = 7 * 24 * 3600.0,
        publish_timeout_seconds: float = 5.0,
        connect_timeout_seconds: float = 10.0,
        reconnect_wait_seconds: float = 0.5,
        stop_grace_seconds: float = 2.0,
        replicas: int = 1,
    ) -> None:
        self.url = url
        self.stream = _token(stream, "stream name")
        self.subject_prefix = subject_prefix
        self._ack_wait = ack_wait_seconds
        self._max_deliver = max_deliver
        self._max_ack_pending = max_ack_pending
        self._max_in_flight = max_in_flight
        self._fetch_batch = fetch_batch
        self._fetch_seconds = fetch_seconds
        # JetStream refuses a duplicate window longer than the stream's max age.
        self._duplicate_window = min(duplicate_window_seconds, max_age_seconds)
        self.max_age_seconds = max_age_seconds
        self._publish_timeout = publish_timeout_seconds
        self._connect_timeout = connect_timeout_seconds
        self._reconnect_wait = reconnect_wait_seconds
        self._stop_grace = stop_grace_seconds
        self._replicas = replicas  # servers keeping the stream and each consumer (0033)
        # In-progress acks well inside the ack wait, so a slow but live handling is kept.
        self._progress_seconds = ack_wait_seconds / 4
        self._bindings: list[_Binding] = []
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._settlements: asyncio.Queue[tuple[_Delivery, Outcome]] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._all_settled = asyncio.Event()
        self._all_settled.set()
        self._stopping = False
        self._broker: BrokerPresence = presence(url)
        self._stream_away = Outage(log)  # a publish was answered "no stream"
        self.received = 0  # messages taken from the broker, redeliveries included
        self.settled = 0  # messages answered to the broker: acked, nak'ed or terminated

    # The Transport protocol.

    @property
    def running(self) -> bool:
        return self._nc is not None and self._nc.is_connected and not self._stopping

    def bind(self, consumer: str, event_type: str, sink: Sink) -> None:
        binding = _Binding(
            consumer=consumer,
            event_type=event_type,
            sink=sink,
            subject=self.subject_for(event_type),
            durable=f"{_token(consumer, 'consumer')}-{event_type}",
        )
        binding.room.set()
        self._bindings.append(binding)
        if self._js is not None and not self._stopping:
            binding.task = asyncio.create_task(
                self._receive_forever(binding), name=f"nats-fetch:{binding.durable}"
            )

    async def start(self) -> None:
        self._stopping = False
        self._nc = await self._connect()
        self._js = self._nc.jetstream(timeout=self._publish_timeout)
        try:
            await self._ensure_stream()
            await asyncio.gather(*(self._declare(b) for b in self._bindings))
        except BaseException:
            nc, self._nc, self._js = self._nc, None, None
            await nc.close()
            raise
        self._settlements = asyncio.Queue()
        self._workers = [
            asyncio.create_task(self._settle_forever(self._settlements), name="nats-settle"),
            asyncio.create_task(self._keep_alive_forever(), name="nats-in-progress"),
        ]
        for binding in self._bindings:
            binding.task = asyncio.create_task(
                self._receive_forever(binding), name=f"nats-fetch:{binding.durable}"
            )
        log.info(
            "bus over NATS at %s: stream %s, %d durable consumers",
            self.url,
            self.stream,
            len(self._bindings),
        )

    async def stop(self) -> None:
        """Stop fetching; give what is being handled a moment to finish and be acked; hand
        back (nak) what is still running, so another replica or the next start gets it."""
        if self._nc is None:
            return
        self._stopping = True
        fetchers = [b.task for b in self._bindings if b.task is not None]
        for task in fetchers:
            task.cancel()
        await asyncio.gather(*fetchers, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all_settled.wait(), self._stop_grace)
        if self._settlements is not None:
            for binding in self._bindings:
                for delivery in list(binding.in_flight):
                    self._settlements.put_nowait((delivery, "nak"))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_settled.wait(), self._stop_grace)
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        nc, self._nc, self._js = self._nc, None, None
        for binding in self._bindings:
            subscription, binding.subscription = binding.subscription, None
            if subscription is not None:
                with contextlib.suppress(Exception):
                    await subscription.unsubscribe()
        try:  # make sure the last acks and naks reached the broker before closing
            await asyncio.wait_for(nc.flush(), self._stop_grace)
        except Exception as error:  # reconnecting or already closed: they are redelivered
            log.debug("flushing the NATS connection failed: %r", error)
        await close_quietly(nc)
        for binding in self._bindings:
            binding.task = None
            binding.in_flight.clear()
            binding.room.set()
        self._all_settled.set()

    async def publish(self, envelope: Envelope) -> None:
        """Return once the broker has stored the envelope (its PubAck); a repeat of the same
        envelope id inside the duplicate window is acknowledged but not stored again."""
        js, nc = self._js, self._nc
        if js is None or nc is None or self._stopping:
            raise RuntimeError(f"the NATS transport to {self.url} is not running")
        if not nc.is_connected:  # nats-py would buffer it, then time out: fail now instead
            raise BrokerAway(f"the broker NATS {self.url} is away")
        subject, data, headers = (
            self.subject_for(envelope.type),
            encode(envelope),
            headers_of(envelope),
        )
        try:
            ack = await js.publish(
                subject, data, timeout=self._publish_timeout, stream=self.stream, headers=headers
            )
        except nats.js.errors.NoStreamResponseError:  # the broker lost its state: declare again
            self._stream_missing()
            await self._ensure_stream()
            ack = await js.publish(
                subject, data, timeout=self._publish_timeout, stream=self.stream, headers=headers
            )
        self._stream_answers()
        if ack.duplicate:
            log.debug("NATS already stored %s %s", envelope.type, envelope.id)

    def _stream_missing(self) -> None:
        """Said once until the stream answers again, not at every publish meanwhile: a
        cluster electing the stream's leader answers "no stream" to each (0032, 0033)."""
        self._stream_away.begin(
            "NATS has no stream %s; creating it again",
            self.stream,
            still="NATS still has no stream %s; creating it again",
        )

    def _stream_answers(self) -> None:
        self._stream_away.end("NATS stream %s stores what is published again", self.stream)

    async def ping(self) -> None:
        """Raise unless the broker answers now."""
        nc = self._nc
        if nc is None or not nc.is_connected:
            raise BrokerAway(f"the broker NATS {self.url} is away")
        try:
            await nc.flush(timeout=1)  # inside readiness's own timeout, to name the broker
        except Exception as error:
            raise ConnectionError(f"no answer from {self.url}: {error!r}") from error

    # What tests and operators can ask.

    def subject_for(self, event_type: str) -> str:
        return f"{self.subject_prefix}.{_token(event_type, 'event type')}"

    @property
    def in_flight(self) -> int:
        """Messages taken from the broker and not yet answered."""
        return sum(len(b.in_flight) for b in self._bindings)

    async def backlog(self) -> int:
        """What the broker holds for the consumers bound here: messages not yet delivered,
        and delivered ones not yet acked."""
        js = self._js
        if js is None:
            raise RuntimeError(f"the NATS transport to {self.url} is not running")
        total = 0
        for binding in self._bindings:
            info = await js.consumer_info(self.stream, binding.durable)
            total += (info.num_pending or 0) + (info.num_ack_pending or 0)
        return total

    # Connecting and declaring.

    async def _connect(self) -> Client:
        """Its going and coming back are said by the BrokerPresence (app/split/nats.py)."""

        async def on_reconnected() -> None:
            self._refetch()

        try:
            return await connect(
                self.url,
                "seams",
                timeout=self._connect_timeout,
                reconnect_wait=self._reconnect_wait,
                reconnected=on_reconnected,
            )
        except Exception as error:
            raise ConnectionError(
                f"cannot reach NATS at {self.url} within {self._connect_timeout}s: {error!r}"
            ) from error

    async def _ensure_stream(self) -> None:
        """Create the stream, or take the one that is there (another process made it)."""
        js = self._require_js()
        wanted = StreamConfig(
            name=self.stream,
            subjects=[f"{self.subject_prefix}.>"],
            storage=StorageType.FILE,
            retention=RetentionPolicy.LIMITS,
            max_age=self.max_age_seconds,
            duplicate_window=self._duplicate_window,
            num_replicas=self._replicas,
        )
        try:
            await js.add_stream(wanted)
        except nats.js.errors.BadRequestError:  # exists with another configuration
            info = await js.stream_info(self.stream)
            if f"{self.subject_prefix}.>" not in (info.config.subjects or []):
                raise RuntimeError(
                    f"NATS stream {self.stream} exists but does not take "
                    f"{self.subject_prefix}.> (it takes {info.config.subjects})"
                ) from None
            log.info("NATS stream %s exists with another configuration; using it", self.stream)
            kept = info.config.max_age or 0.0  # seconds; 0: for ever
            if kept == 0.0 or kept > self.max_age_seconds + 1:
                # docs/decisions/0035-retention.md: a message redelivered after its inbox id
                # was purged would be handled twice.
                log.warning(
                    "NATS stream %s keeps messages %s, longer than APP_RETENTION_SECONDS "
                    "(%.0f s) keeps the inbox ids that make a redelivery a no-op: set its "
                    "max age to at most that (nats stream edit %s --max-age %ds)",
                    self.stream,
                    "for ever" if kept == 0.0 else f"{kept:.0f} s",
                    self.max_age_seconds,
                    self.stream,
                    int(self.max_age_seconds),
                )

    async def _declare(self, binding: _Binding) -> None:
        """Make sure the durable exists and this process has a pull subscription on it."""
        js = self._require_js()
        await self._ensure_consumer(binding)
        binding.declared = True
        if binding.subscription is None:
            binding.subscription = await js.pull_subscribe_bind(
                durable=binding.durable, stream=self.stream
            )

    async def _ensure_consumer(self, binding: _Binding) -> None:
        js = self._require_js()
        config = ConsumerConfig(
            name=binding.durable,
            durable_name=binding.durable,
            description=f"{binding.consumer} handles {binding.event_type}",
            filter_subject=binding.subject,
            deliver_policy=DeliverPolicy.ALL,  # a module that starts late misses nothing
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self._ack_wait,
            max_deliver=self._max_deliver,
            max_ack_pending=self._max_ack_pending,
            num_replicas=self._replicas,
        )
        try:
            await js.add_consumer(self.stream, config)
        except nats.js.errors.BadRequestError as error:  # exists with another configuration
            log.info("NATS consumer %s exists (%s); using it", binding.durable, error.description)

    def _require_js(self) -> JetStreamContext:
        if self._js is None:
            raise RuntimeError(f"the NATS transport to {self.url} is not running")
        return self._js

    # Receiving.

    async def _receive_forever(self, binding: _Binding) -> None:
        failures = 0
        failing = Outage(log)  # a streak of failed fetches: its first is said
        while not self._stopping:
            if self._nc is not None and self._nc.is_reconnecting:
                # Nothing to fetch; a reconnect restarts this. nats-py marks the connection
                # reconnecting before it tells the presence (its reconnect task first waits
                # for the old socket to close): until then, nap, or this loop would keep
                # the event loop and that task would never run.
                if self._broker.away:
                    await self._broker.until_back()
                else:
                    await asyncio.sleep(self._reconnect_wait)
                continue
            try:
                if binding.subscription is None or not binding.declared:
                    # After a failure or a reconnect: the broker may have lost its state.
                    await self._ensure_stream()
                    await self._declare(binding)
                assert binding.subscription is not None
                await binding.room.wait()
                room = self._max_in_flight - len(binding.in_flight)
                if room <= 0:
                    binding.room.clear()
                    continue
                messages = await binding.subscription.fetch(
                    min(self._fetch_batch, room), timeout=self._fetch_seconds
                )
            except TimeoutError:
                # Nothing to fetch: nats' TimeoutError (FetchTimeoutError too) is one, and
                # some paths of nats-py's fetch raise a plain asyncio.TimeoutError.
                continue
            except asyncio.CancelledError:
                raise
            except Exception as error:  # broker away or its state gone: set up again
                failures += 1
                # At DEBUG if the broker is away (said once already by its presence).
                quiet = self._broker.away or not self.running
                said = "fetching %s from NATS failed (%d in a row): %r"
                failing.begin(
                    said,
                    binding.durable,
                    failures,
                    error,
                    level=logging.DEBUG if quiet else logging.WARNING,
                    still=said,
                )
                binding.declared = False
                await asyncio.sleep(min(0.1 * 2 ** min(failures, 5), 2.0))
                continue
            failures = 0
            failing.forget()  # a streak's end is not said: the next failure starts one
            for msg in messages:
                self._take(binding, msg)

    def _refetch(self) -> None:
        """After a reconnect the broker has forgotten the pull requests that were waiting
        (and, if it restarted without its store, the stream and durables): declare again and
        ask again now rather than when they time out. What the broker sent meanwhile stays
        in the subscription and is taken first."""
        if self._stopping:
            return
        for binding in self._bindings:
            binding.declared = False
            if binding.task is not None:
                binding.task.cancel()
                binding.task = asyncio.create_task(
                    self._receive_forever(binding), name=f"nats-fetch:{binding.durable}"
                )

    def _take(self, binding: _Binding, msg: Msg) -> None:
        """Hand a message to the consumer without waiting for it: different aggregates are
        handled concurrently, and the Consumer's lanes keep each aggregate's order because
        messages are submitted in the order they were delivered."""
        self.received += 1
        delivery = _Delivery(binding, msg, time.monotonic())
        binding.in_flight.add(delivery)
        self._all_settled.clear()
        if len(binding.in_flight) >= self._max_in_flight:
            binding.room.clear()
        settlements = self._settlements
        assert settlements is not None
        try:
            envelope = decode(msg.data)
            if envelope.type != binding.event_type:
                raise MalformedEvent(
                    f"an envelope of type {envelope.type} on {binding.subject} (id {envelope.id})"
                )
        except MalformedEvent as error:
            log.error(
                "terminating a malformed message on %s for %s: %s",
                msg.subject,
                binding.consumer,
                error,
            )
            settlements.put_nowait((delivery, "term"))
            return
        if msg.metadata.num_delivered > 1:
            with flow_of(envelope, binding.consumer):  # the line carries the flow's ids
                log.info(
                    "%s gets %s %s again (delivery %d of at most %d)",
                    binding.consumer,
                    envelope.type,
                    envelope.id,
                    msg.metadata.num_delivered,
                    self._max_deliver,
                )

        def handled(done: asyncio.Future[None]) -> None:
            failed = done.cancelled() or done.exception() is not None
            settlements.put_nowait((delivery, "nak" if failed else "ack"))

        try:
            binding.sink(envelope).add_done_callback(handled)
        except Exception as error:
            with flow_of(envelope, binding.consumer):
                log.error(
                    "%s refused %s %s: %r", binding.consumer, envelope.type, envelope.id, error
                )
            settlements.put_nowait((delivery, "nak"))

    async def _settle_forever(self, settlements: asyncio.Queue[tuple[_Delivery, Outcome]]) -> None:
        while True:
            delivery, outcome = await settlements.get()
            binding = delivery.binding
            if delivery not in binding.in_flight:
                continue  # already handed back at stop
            try:
                if outcome == "ack":
                    await delivery.msg.ack()
                elif outcome == "nak":
                    await delivery.msg.nak()
                else:
                    await delivery.msg.term()
            except Exception as error:  # unanswered: the broker delivers it again, harmlessly
                log.warning("answering %s to NATS failed: %r", outcome, error)
            binding.in_flight.discard(delivery)
            binding.room.set()
            self.settled += 1
            if not any(b.in_flight for b in self._bindings):
                self._all_settled.set()

    async def _keep_alive_forever(self) -> None:
        while True:
            await asyncio.sleep(self._progress_seconds)
            older = time.monotonic() - self._progress_seconds
            for binding in self._bindings:
                for delivery in list(binding.in_flight):
                    if delivery.taken_at <= older:
                        try:
                            await delivery.msg.in_progress()
                        except Exception as error:
                            log.debug("in_progress to NATS failed: %r", error)
