"""An outage is said once, not once per message (issue 15): the outbox relay whose database
is away while it marks envelopes delivered or sweeps, or whose broker is away while it
publishes, the NATS transport whose stream answers "no stream" while a cluster elects its
leader, or whose fetches fail, and a process whose broker connections reconnect, each log
one line when it starts and one when it is over (app/kernel/outage.py), however many
messages meet it meanwhile. Other errors keep theirs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace

import nats.js.errors
import pytest

from app.bus import Envelope
from app.bus.activity import Activity
from app.bus.outbox import OutboxRelay
from app.kernel.errors import StoreUnavailable
from app.split.nats import BrokerPresence
from app.split.nats_transport import NatsTransport, _Binding
from tests.support.events import envelope
from tests.support.waits import until

pytestmark = pytest.mark.anyio

ENVELOPES = 6


def records(caplog: pytest.LogCaptureFixture, logger: str, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelno == level]


# The outbox relay and its database.


@dataclass
class Outbox:
    """An outbox whose marking fails with `error` while it is set, and its reading of what
    is pending with `sweep_error`."""

    error: Exception | None = None
    failures: int = 0
    marked: list[str] = field(default_factory=list)
    sweep_error: Exception | None = None
    sweeps: int = 0
    swept: int = 0

    async def pending(self, limit: int) -> list[Envelope]:
        self.sweeps += 1
        if self.sweep_error is not None:
            raise self.sweep_error
        self.swept += 1
        return []

    async def mark_delivered(self, envelopes: Sequence[Envelope]) -> None:
        if self.error is not None:
            self.failures += 1
            raise self.error
        self.marked.extend(e.id for e in envelopes)


class Accepting:
    """A transport that takes every envelope."""

    def __init__(self) -> None:
        self.published: list[str] = []

    async def publish(self, envelope: Envelope) -> None:
        self.published.append(envelope.id)


async def relay_through(outbox: Outbox, until_failures: int) -> Accepting:
    """Hand the relay ENVELOPES while marking fails, let it fail `until_failures` times,
    then make marking work and wait for every envelope to be marked."""
    transport = Accepting()
    relay = OutboxRelay("orders", outbox, transport, Activity())  # type: ignore[arg-type]
    await relay.start()
    try:
        relay.hand_off([envelope(n) for n in range(ENVELOPES)])
        await until(lambda: len(transport.published) == ENVELOPES, "every envelope published")
        await until(lambda: outbox.failures >= until_failures, "marking to fail repeatedly")
        outbox.error = None
        await until(lambda: len(outbox.marked) == ENVELOPES, "every envelope marked")
    finally:
        await relay.stop()
    return transport


async def test_a_database_away_while_marking_is_said_once_and_its_return_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="app.bus.outbox")
    outbox = Outbox(error=StoreUnavailable("a database this needs is unreachable"))

    await relay_through(outbox, until_failures=5)

    assert outbox.failures >= 5
    warnings = records(caplog, "app.bus.outbox", logging.WARNING)
    assert len(warnings) == 1, warnings
    assert "orders" in warnings[0] and "cannot reach its database" in warnings[0]
    back = [m for m in records(caplog, "app.bus.outbox", logging.INFO) if "again" in m]
    assert back == [
        f"the outbox of orders reaches its database again: {ENVELOPES} envelopes waited to be "
        "marked delivered"
    ]


async def test_a_database_away_while_sweeping_is_said_once_and_its_return_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="app.bus.outbox")
    outbox = Outbox()
    relay = OutboxRelay("payments", outbox, Accepting(), Activity(), sweep_seconds=0.01)  # type: ignore[arg-type]
    await relay.start()
    try:
        outbox.sweep_error = StoreUnavailable("a database this needs is unreachable")
        await until(lambda: outbox.sweeps >= 6, "the sweep to fail repeatedly")
        outbox.sweep_error, swept = None, outbox.swept
        await until(lambda: outbox.swept > swept, "a sweep to work again")
    finally:
        await relay.stop()

    warnings = records(caplog, "app.bus.outbox", logging.WARNING)
    assert len(warnings) == 1, warnings
    assert "payments" in warnings[0] and "cannot reach its database" in warnings[0]
    assert records(caplog, "app.bus.outbox", logging.INFO) == [
        "the outbox of payments reaches its database again: 0 envelopes waited to be marked "
        "delivered"
    ]


class Unpublishable:
    """A transport whose broker is away (ConnectionError) until `away` is cleared."""

    def __init__(self) -> None:
        self.away = True
        self.refused: set[str] = set()
        self.published: list[str] = []

    async def publish(self, envelope: Envelope) -> None:
        if self.away:
            self.refused.add(envelope.id)
            raise ConnectionError("the broker is away")
        self.published.append(envelope.id)


async def test_a_broker_away_while_publishing_is_said_once_and_its_return_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="app.bus.outbox")
    transport, outbox = Unpublishable(), Outbox()
    relay = OutboxRelay("orders", outbox, transport, Activity())  # type: ignore[arg-type]
    await relay.start()
    try:
        relay.hand_off([envelope(n) for n in range(ENVELOPES)])
        await until(lambda: len(transport.refused) == ENVELOPES, "every publish refused")
        transport.away = False
        await until(lambda: len(outbox.marked) == ENVELOPES, "every envelope marked")
    finally:
        await relay.stop()

    # A broker away is said by its presence: INFO here (a WARNING for any other error).
    infos = records(caplog, "app.bus.outbox", logging.INFO)
    assert len(infos) == 2, infos
    assert infos[0].startswith("publishing orders's events failed (ConnectionError(")
    assert infos[1] == "publishing orders's events works again"
    assert not records(caplog, "app.bus.outbox", logging.WARNING)
    failed = [m for m in records(caplog, "app.bus.outbox", logging.DEBUG) if "failed" in m]
    assert len(failed) == ENVELOPES - 1  # the others' first failures


async def test_other_marking_errors_keep_a_line_each(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="app.bus.outbox")
    outbox = Outbox(error=RuntimeError("the outbox table is locked"))

    await relay_through(outbox, until_failures=3)

    warnings = records(caplog, "app.bus.outbox", logging.WARNING)
    assert len(warnings) == outbox.failures >= 3
    assert all("marking" in m and "locked" in m for m in warnings)
    assert not [m for m in records(caplog, "app.bus.outbox", logging.INFO) if "again" in m]


# The NATS transport and its stream.


@dataclass
class Ack:
    duplicate: bool = False


@dataclass
class Electing:
    """A JetStream whose stream answers "no stream" to the first `refusals` publishes, as a
    cluster electing the stream's leader does; declaring the stream finds it there."""

    refusals: int
    published: int = 0
    declared: int = 0

    async def publish(self, subject: str, data: bytes, **_: object) -> Ack:
        if self.refusals > 0:
            self.refusals -= 1
            raise nats.js.errors.NoStreamResponseError()
        self.published += 1
        return Ack()

    async def add_stream(self, config: object) -> None:
        self.declared += 1


@dataclass
class Connected:
    is_connected: bool = True


async def test_a_stream_missing_for_many_publishes_is_said_once_and_its_return_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="app.bus.nats")
    transport = NatsTransport("nats://127.0.0.1:4222")
    # Each failed publish is refused twice: once as sent, once after declaring again.
    jetstream = Electing(refusals=2 * ENVELOPES)
    transport._js, transport._nc = jetstream, Connected()  # type: ignore[assignment]

    for n in range(ENVELOPES):
        with pytest.raises(nats.js.errors.NoStreamResponseError):
            await transport.publish(envelope(n))
    for n in range(ENVELOPES, 2 * ENVELOPES):
        await transport.publish(envelope(n))

    assert jetstream.declared == ENVELOPES  # it still declares the stream again each time
    assert jetstream.published == ENVELOPES
    warnings = records(caplog, "app.bus.nats", logging.WARNING)
    assert warnings == ["NATS has no stream SEAMS_EVENTS; creating it again"]
    infos = records(caplog, "app.bus.nats", logging.INFO)
    assert infos == ["NATS stream SEAMS_EVENTS stores what is published again"]


async def test_a_stream_gone_and_recreated_by_one_publish_is_said_and_its_return(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="app.bus.nats")
    transport = NatsTransport("nats://127.0.0.1:4222")
    jetstream = Electing(refusals=1)
    transport._js, transport._nc = jetstream, Connected()  # type: ignore[assignment]

    for n in range(3):
        await transport.publish(envelope(n))

    assert (jetstream.declared, jetstream.published) == (1, 3)
    assert len(records(caplog, "app.bus.nats", logging.WARNING)) == 1
    assert len(records(caplog, "app.bus.nats", logging.INFO)) == 1


@dataclass
class Failing:
    """A pull subscription whose fetches fail as `script` says (an error, or [] for nothing
    fetched); the transport stops when the script ends."""

    transport: NatsTransport
    script: list[Exception | None]

    async def fetch(self, batch: int, timeout: float) -> list[object]:
        if not self.script:
            self.transport._stopping = True
            raise TimeoutError
        step = self.script.pop(0)
        if step is not None:
            raise step
        return []


async def test_a_streak_of_failed_fetches_is_said_once_per_streak(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="app.bus.nats")
    transport = NatsTransport("nats://127.0.0.1:1")  # nothing connects: only flags are read
    transport._nc = SimpleNamespace(is_reconnecting=False, is_connected=True)  # type: ignore[assignment]
    binding = _Binding("orders", "Pinged", lambda _: asyncio.Future(), "s.Pinged", "orders-Pinged")
    binding.room.set()
    gone = RuntimeError("consumer not found")
    binding.subscription = Failing(transport, [gone, gone, None, gone])  # type: ignore[assignment]

    async def declare(binding: _Binding) -> None:
        binding.declared = True

    async def ensure_stream() -> None:
        return None

    transport._declare, transport._ensure_stream = declare, ensure_stream  # type: ignore[method-assign]
    await transport._receive_forever(binding)

    said = (
        "fetching orders-Pinged from NATS failed (%d in a row): RuntimeError('consumer not found')"
    )
    assert records(caplog, "app.bus.nats", logging.WARNING) == [said % 1, said % 1]
    assert records(caplog, "app.bus.nats", logging.DEBUG) == [said % 2]


# A process and its broker.


def test_a_broker_away_for_several_connections_is_said_once_and_its_return_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="app.split.nats")
    broker = BrokerPresence("nats://127.0.0.1:4222")
    first, second = object(), object()

    broker.lost(first, "disconnected")  # type: ignore[arg-type]
    broker.lost(second, "disconnected")  # type: ignore[arg-type]
    broker.returned(first)  # type: ignore[arg-type]
    assert broker.away
    broker.returned(second)  # type: ignore[arg-type]
    assert not broker.away
    broker.returned(second)  # type: ignore[arg-type]

    warnings = records(caplog, "app.split.nats", logging.WARNING)
    assert len(warnings) == 1 and "is gone (disconnected)" in warnings[0], warnings
    infos = records(caplog, "app.split.nats", logging.INFO)
    assert len(infos) == 1, infos
    assert infos[0].startswith("the broker NATS nats://127.0.0.1:4222 is back after ")
    assert infos[0].endswith(" s; resuming")


def test_a_broker_away_until_its_connections_close_ends_unsaid(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="app.split.nats")
    broker = BrokerPresence("nats://127.0.0.1:4222")
    connection = object()

    broker.lost(connection, "disconnected")  # type: ignore[arg-type]
    broker.closed(connection)  # type: ignore[arg-type]
    broker.returned(connection)  # type: ignore[arg-type]
    broker.lost(connection, "disconnected")  # type: ignore[arg-type]

    assert not records(caplog, "app.split.nats", logging.INFO)
    assert len(records(caplog, "app.split.nats", logging.WARNING)) == 2  # two outages
