"""Event contracts on the bus: the declared wire name (never the class name), versions,
upcasting older payloads in one place, and a version a consumer does not know yet, which is
parked naming the version it needs, never misread (docs/decisions/0026, 0027)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from app.bus import Bus, DeliveryStore, Envelope, Event, RetryPolicy, event_type_name
from app.bus.contracts import NewerVersion, UnknownVersion, readable_versions, upcaster
from app.bus.envelope import MalformedEvent, open_payload, wrap
from app.bus.transport import InProcessTransport

pytestmark = pytest.mark.anyio

WIRE = "ContractsParcelShipped"


class ShippedV1(Event, frozen=True, kw_only=True):
    """The contract as a consumer that was not upgraded still has it."""

    wire_name = WIRE
    version = 1

    parcel_id: str


class Shipped(Event, frozen=True, kw_only=True):
    """The contract now: v2 says which carrier took the parcel."""

    wire_name = WIRE
    version = 2

    parcel_id: str
    carrier: str


@upcaster(Shipped, from_version=1)
def _shipped_v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    """v1 parcel ids were "<carrier>:<number>": the carrier is derived from them."""
    return {**payload, "carrier": payload["parcel_id"].partition(":")[0]}


class ParcelShipped(Event, frozen=True, kw_only=True):
    """The same contract under another class name, as after a rename."""

    wire_name = WIRE
    version = 2

    parcel_id: str
    carrier: str


def envelope_of(event: Event, *, aggregate: str = "p1") -> Envelope:
    return wrap(
        event,
        producer="shipping",
        aggregate_id=aggregate,
        sequence=1,
        correlation_id="corr",
        causation_id=None,
    )


def as_v1(payload: dict[str, Any], *, aggregate: str = "p1") -> Envelope:
    """An envelope as the producer published it before v2, e.g. still in an outbox."""
    return msgspec.structs.replace(
        envelope_of(Shipped(parcel_id="x", carrier="x"), aggregate=aggregate),
        version=1,
        payload=payload,
    )


def new_bus(store: DeliveryStore) -> Bus:
    return Bus(
        InProcessTransport(),
        retry=RetryPolicy(max_attempts=1, base_delay=0.0, max_delay=0.0),
        store=store,
    )


# The wire name.


async def test_the_envelope_carries_the_declared_wire_name_not_the_class_name() -> None:
    envelope = envelope_of(Shipped(parcel_id="dhl:1", carrier="dhl"))

    assert (event_type_name(Shipped), envelope.type) == (WIRE, WIRE)
    assert Shipped.__name__ != WIRE


async def test_renaming_an_event_class_changes_nothing_on_the_wire(tmp_path: Path) -> None:
    published = envelope_of(Shipped(parcel_id="dhl:1", carrier="dhl"))
    bus = new_bus(DeliveryStore(f"sqlite+aiosqlite:///{tmp_path / 'bus.db'}"))
    handled: list[ParcelShipped] = []

    async def handle(event: ParcelShipped, _envelope: Envelope) -> None:
        handled.append(event)

    bus.subscribe("tracking", ParcelShipped, handle)  # the consumer's code renamed the class
    await bus.start()
    try:
        await bus.transport.publish(published)
        await bus.wait_quiet(2)
    finally:
        await bus.stop()

    assert event_type_name(ParcelShipped) == published.type
    assert handled == [ParcelShipped(parcel_id="dhl:1", carrier="dhl")]


async def test_an_event_that_does_not_declare_its_wire_name_and_version_is_refused() -> None:
    with pytest.raises(TypeError, match="must declare wire_name and version"):

        class Undeclared(Event, frozen=True, kw_only=True):
            parcel_id: str

    with pytest.raises(TypeError, match="must declare version"):

        class Unversioned(Event, frozen=True, kw_only=True):
            wire_name = "Unversioned"

    with pytest.raises(TypeError, match="must declare wire_name"):

        class Inherited(Shipped, frozen=True, kw_only=True):
            version = 3  # a subclass is a new contract: it names itself too


# Versions and upcasting.


async def test_producers_publish_the_newest_version() -> None:
    assert envelope_of(Shipped(parcel_id="dhl:1", carrier="dhl")).version == 2


async def test_a_consumer_reads_every_version_its_upcasters_reach() -> None:
    assert list(readable_versions(Shipped)) == [1, 2]
    assert list(readable_versions(ParcelShipped)) == [1, 2]  # one chain per wire name
    assert list(readable_versions(ShippedV1)) == [1]


async def test_an_older_payload_is_upcast_to_the_newest_version_without_changing_it() -> None:
    old = as_v1({"parcel_id": "ups:77"})

    assert open_payload(old, Shipped) == Shipped(parcel_id="ups:77", carrier="ups")
    assert old.payload == {"parcel_id": "ups:77"}  # the stored envelope stays v1


async def test_an_older_payload_the_upcaster_cannot_read_is_malformed() -> None:
    with pytest.raises(MalformedEvent, match=rf"{WIRE} v1 payload cannot be upcast"):
        open_payload(as_v1({"parcel": "ups:77"}), Shipped)


async def test_a_newer_version_is_never_misread_by_an_older_consumer() -> None:
    newer = envelope_of(Shipped(parcel_id="dhl:1", carrier="dhl"))

    with pytest.raises(UnknownVersion) as raised:
        open_payload(newer, ShippedV1)

    assert isinstance(raised.value, NewerVersion)
    assert (raised.value.version, list(raised.value.readable)) == (2, [1])
    assert f"needs a consumer that knows {WIRE} v2" in str(raised.value)


async def test_a_version_older_than_the_upcasters_reach_names_the_missing_upcaster() -> None:
    with pytest.raises(UnknownVersion, match=f"needs an upcaster from v0 .* declares {WIRE}"):
        open_payload(msgspec.structs.replace(as_v1({"parcel_id": "a:1"}), version=0), Shipped)


async def test_a_consumer_on_v1_parks_a_v2_and_once_upgraded_handles_it_on_start(
    tmp_path: Path,
) -> None:
    """A rolling upgrade done in the wrong order: the producer moved to v2 first. The old
    consumer neither misreads nor loses the event, nor calls it a failure: it parks it (and
    its aggregate's later events behind it); upgraded, it handles them when it starts."""
    store_url = f"sqlite+aiosqlite:///{tmp_path / 'bus.db'}"
    newer = envelope_of(Shipped(parcel_id="dhl:1", carrier="dhl"))
    later = msgspec.structs.replace(as_v1({"parcel_id": "dhl:1"}), sequence=2)
    seen_by_old: list[ShippedV1] = []
    seen_by_new: list[Shipped] = []

    async def old_handler(event: ShippedV1, _envelope: Envelope) -> None:
        seen_by_old.append(event)

    async def new_handler(event: Shipped, _envelope: Envelope) -> None:
        seen_by_new.append(event)

    old = new_bus(DeliveryStore(store_url))
    old.subscribe("tracking", ShippedV1, old_handler)
    await old.start()
    try:
        await old.transport.publish(newer)
        await old.transport.publish(later)  # readable, but behind a parked one: it waits
        await old.wait_quiet(2)
        parked = await old.store.parked_for("tracking", "p1")
        assert await old.store.dead_letters(after=None, limit=10) == []
        assert old.stats[(WIRE, "tracking", "parked")] == 2
    finally:
        await old.stop()
    assert seen_by_old == []
    assert parked == [newer, later]

    upgraded = new_bus(DeliveryStore(store_url))
    upgraded.subscribe("tracking", Shipped, new_handler)
    await upgraded.start()
    try:
        await upgraded.wait_quiet(2)
        assert await upgraded.store.parked_for("tracking", "p1") == []
    finally:
        await upgraded.stop()
    assert seen_by_new == [
        Shipped(parcel_id="dhl:1", carrier="dhl"),
        Shipped(parcel_id="dhl:1", carrier="dhl"),  # the v1 one, upcast
    ]


# Where upcasters may be declared.


async def test_an_upcaster_beyond_the_newest_version_is_refused() -> None:
    def step(payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    with pytest.raises(ValueError, match="steps go from v1 to v1"):
        upcaster(Shipped, from_version=2)(step)


async def test_a_second_upcaster_for_the_same_step_is_refused() -> None:
    def again(payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    with pytest.raises(ValueError, match=f"{WIRE} has an upcaster from v1 already"):
        upcaster(Shipped, from_version=1)(again)


async def test_an_upcaster_away_from_its_contract_is_refused() -> None:
    def elsewhere(payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    elsewhere.__module__ = "app.modules.tracking.service"  # as if a consumer declared it

    with pytest.raises(ValueError, match=f"belongs next to the contract, in {__name__}"):
        upcaster(Shipped, from_version=1)(elsewhere)
