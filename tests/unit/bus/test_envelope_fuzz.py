"""The envelope decoding is fuzzed: malformed or unknown events are rejected cleanly
(dead-lettered with the reason), and never crash the bus."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.bus import Bus, DeliveryStore, Envelope, Event, RetryPolicy
from app.bus.envelope import MalformedEvent, decode, encode, wrap
from app.bus.transport import InProcessTransport


class Charged(Event, frozen=True, kw_only=True):
    wire_name = "Charged"
    version = 1

    order_id: str
    amount: int


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


@given(st.binary(max_size=300))
def test_decoding_arbitrary_bytes_gives_an_envelope_or_a_malformed_event(data: bytes) -> None:
    try:
        envelope = decode(data)
    except MalformedEvent:
        return
    assert decode(encode(envelope)) == envelope


@given(st.dictionaries(st.text(max_size=15), json_values, max_size=12))
def test_decoding_arbitrary_json_objects_never_raises_anything_else(fields: dict[str, Any]) -> None:
    with contextlib.suppress(MalformedEvent):
        decode(msgspec.json.encode(fields))


def good(n: int) -> Envelope:
    return wrap(
        Charged(order_id=f"o{n}", amount=n),
        producer="payments",
        aggregate_id=f"agg{n}",
        sequence=1,
        correlation_id="c",
        causation_id=None,
    )


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    payload=st.dictionaries(st.text(max_size=10), json_values, max_size=5),
    version=st.integers(min_value=-2, max_value=3),
)
def test_a_malformed_payload_is_dead_lettered_or_parked_and_the_bus_carries_on(
    payload: dict[str, Any], version: int
) -> None:
    async def scenario() -> None:
        bus = Bus(
            InProcessTransport(),
            retry=RetryPolicy(max_attempts=1, base_delay=0.0, max_delay=0.0),
            store=DeliveryStore("sqlite+aiosqlite:///:memory:"),
        )
        handled: list[Charged] = []

        async def handler(event: Charged, _envelope: Envelope) -> None:
            handled.append(event)

        bus.subscribe("ledger", Charged, handler)
        await bus.start()
        try:
            fuzzed = msgspec.structs.replace(good(0), payload=payload, version=version)
            await bus.transport.publish(fuzzed)
            await bus.transport.publish(good(1))  # a later, valid event still gets through
            await bus.wait_quiet(2)
            letters = await bus.store.dead_letters(after=None, limit=10)
            parked = await bus.store.parked_for("ledger", "agg0")
            valid = version == 1 and _is_charged(payload)
            assert [e.order_id for e in handled] == (["o0", "o1"] if valid else ["o1"])
            if version > 1:  # newer than this consumer knows: parked for an upgrade, unread
                assert (letters, [e.id for e in parked]) == ([], [fuzzed.id])
            elif not valid:
                [letter] = letters
                assert letter.consumer == "ledger" and letter.attempts == 0
                assert "Charged" in letter.error
        finally:
            await bus.stop()

    asyncio.run(scenario())


def _is_charged(payload: dict[str, Any]) -> bool:
    try:
        msgspec.convert(payload, Charged)
    except msgspec.ValidationError:
        return False
    return True


@pytest.mark.anyio
async def test_an_event_type_nobody_subscribes_to_is_delivered_to_no_one() -> None:
    bus = Bus(InProcessTransport(), store=DeliveryStore("sqlite+aiosqlite:///:memory:"))
    await bus.start()
    stranger = msgspec.structs.replace(good(0), type="SomethingElse")
    await bus.transport.publish(stranger)
    assert bus.stats == {}
    await bus.stop()
