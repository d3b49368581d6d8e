"""Every log line about an event carries its flow's request (correlation) id, also the lines
written outside its handler: a dead letter's aggregate parking the next event, a relay's
publish from a sweep (issue 15, point 4)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from app.bus import Bus, DeliveryStore, Envelope, Event, RetryPolicy
from app.bus.context import current_request_id
from app.bus.envelope import wrap
from app.bus.transport import InProcessTransport

pytestmark = pytest.mark.anyio


class Rang(Event, frozen=True, kw_only=True):
    wire_name = "TestRang"
    version = 1


class Lines(logging.Handler):
    """Each record of app.bus with the request id current when it was written."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[tuple[str, str | None]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((record.getMessage(), current_request_id.get()))


@contextmanager
def lines_of(logger: str) -> Iterator[Lines]:
    lines, target = Lines(), logging.getLogger(logger)
    target.addHandler(lines)
    previous = target.level
    target.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        target.removeHandler(lines)
        target.setLevel(previous)


def rang(correlation_id: str, sequence: int) -> Envelope:
    return wrap(
        Rang(),
        producer="test",
        aggregate_id="bell",
        sequence=sequence,
        correlation_id=correlation_id,
        causation_id=None,
    )


async def test_a_parked_event_is_logged_with_its_own_flow_id() -> None:
    bus = Bus(
        InProcessTransport(),
        retry=RetryPolicy(max_attempts=1),
        store=DeliveryStore("sqlite+aiosqlite:///:memory:"),
    )

    async def refuse(_event: Rang, _envelope: Envelope) -> None:
        raise RuntimeError("the bell is broken")

    bus.subscribe("ringer", Rang, refuse)
    await bus.start()
    try:
        with lines_of("app.bus") as lines:
            await bus.transport.publish(rang("flow-1", 1))  # dead-lettered
            await bus.transport.publish(rang("flow-2", 2))  # parked behind it
    finally:
        await bus.stop()

    dead = [flow for message, flow in lines.seen if message.startswith("dead letter")]
    parked = [flow for message, flow in lines.seen if " parked " in message]
    assert dead == ["flow-1"]
    assert parked == ["flow-2"]
