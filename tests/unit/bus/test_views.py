"""A consumer's view of an event (docs/decisions/0027-tolerant-readers.md): only the fields it
needs, unknown fields ignored, the versions it accepts declared and checked against what
its code can read; a newer version is NewerVersion (parked), never misread."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
import sqlalchemy as sa

from app.bus import Envelope, Event, View
from app.bus.contracts import NewerVersion, UnknownVersion, reading, upcaster
from app.bus.envelope import MalformedEvent, open_payload, wrap
from app.kernel.errors import BoundaryViolation
from app.kernel.sql import SqlDatabase
from app.modules.spec import Assembly, Module, ModuleContext
from tests.support.work import HandedOff

WIRE = "ViewsParcelShipped"


class Shipped(Event, frozen=True, kw_only=True):
    """v2 says which carrier took the parcel; v3 how heavy it was."""

    wire_name = WIRE
    version = 3

    parcel_id: str
    carrier: str
    grams: int | None


@upcaster(Shipped, from_version=1)
def _v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "carrier": payload["parcel_id"].partition(":")[0]}


@upcaster(Shipped, from_version=2)
def _v2_to_v3(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "grams": None}


class Tracked(View, frozen=True, kw_only=True):
    """What a tracking consumer reads: the parcel and its carrier, from v1 to v2."""

    event = Shipped
    accepts = (1, 2)

    parcel_id: str
    carrier: str


def envelope(version: int, payload: dict[str, Any]) -> Envelope:
    return msgspec.structs.replace(
        wrap(
            Shipped(parcel_id="x", carrier="x", grams=1),
            producer="shipping",
            aggregate_id="p1",
            sequence=1,
            correlation_id="c",
            causation_id=None,
        ),
        version=version,
        payload=payload,
    )


def test_a_view_reads_only_its_fields_and_ignores_the_rest() -> None:
    opened = open_payload(
        envelope(2, {"parcel_id": "dhl:1", "carrier": "dhl", "insured": True}), Tracked
    )

    assert opened == Tracked(parcel_id="dhl:1", carrier="dhl")


def test_an_older_accepted_version_is_upcast_before_the_view_is_taken() -> None:
    old = envelope(1, {"parcel_id": "ups:7"})

    assert open_payload(old, Tracked) == Tracked(parcel_id="ups:7", carrier="ups")
    assert old.payload == {"parcel_id": "ups:7"}


def test_a_version_newer_than_the_view_accepts_is_never_read() -> None:
    newer = envelope(3, {"parcel_id": "dhl:1", "carrier": "dhl", "grams": 120})

    with pytest.raises(NewerVersion) as raised:
        open_payload(newer, Tracked)

    assert str(raised.value).startswith(
        f"{WIRE} version 3 is newer than this consumer reads (versions 1 to 2): it needs a "
        f"consumer that knows {WIRE} v3; parked until the consumer is upgraded"
    )


def test_a_version_older_than_the_view_accepts_is_not_newer() -> None:
    class Recent(View, frozen=True, kw_only=True):
        event = Shipped
        accepts = (2, 3)

        carrier: str

    with pytest.raises(UnknownVersion) as raised:
        open_payload(envelope(1, {"parcel_id": "a:1"}), Recent)

    assert not isinstance(raised.value, NewerVersion)  # a dead letter, not parked
    assert list(reading(Recent).accepts) == [2, 3]


def test_a_payload_without_a_field_the_view_needs_is_malformed() -> None:
    with pytest.raises(MalformedEvent, match=rf"{WIRE} v2 payload is invalid"):
        open_payload(envelope(2, {"parcel_id": "dhl:1"}), Tracked)


@pytest.mark.parametrize(
    ("declared", "why"),
    [
        ((), "must declare the versions"),
        ([1, 2], "must declare the versions"),
        ((1, 3), "consecutive and ascending"),
        ((2, 1), "consecutive and ascending"),
        ((3, 4), "accepts ViewsParcelShipped v3 to v4, but this code reads versions 1 to 3"),
        ((0, 1), "accepts ViewsParcelShipped v0 to v1"),
    ],
)
def test_a_view_accepts_only_consecutive_versions_its_code_can_read(
    declared: object, why: str
) -> None:
    with pytest.raises(TypeError, match=why):

        class Wrong(View, frozen=True, kw_only=True):
            event = Shipped
            accepts = declared  # type: ignore[assignment]

            parcel_id: str


def test_a_view_names_the_event_it_reads() -> None:
    with pytest.raises(TypeError, match="must declare the event it reads"):

        class Nameless(View, frozen=True, kw_only=True):
            accepts = (1,)

            parcel_id: str


def module_reading(*views: type[View], subscribes: tuple[type[Event], ...]) -> Module:
    def assemble(_context: ModuleContext) -> Assembly:
        return Assembly(route_handlers=[], dependencies={})

    return Module(
        name="tracking",
        publishes=(),
        subscribes=subscribes,
        reads=views,
        open_store=lambda url: SqlDatabase(url, sa.MetaData()),
        assemble=assemble,
    )


def test_a_module_has_one_view_per_event_it_subscribes_to() -> None:
    class Again(View, frozen=True, kw_only=True):
        event = Shipped
        accepts = (2,)

        parcel_id: str

    assert module_reading(Tracked, subscribes=(Shipped,)).view_of(Shipped) is Tracked
    with pytest.raises(BoundaryViolation, match=f"view of {WIRE} but does not subscribe"):
        module_reading(Tracked, subscribes=())
    with pytest.raises(BoundaryViolation, match=f"2 views of {WIRE}: one view per event"):
        module_reading(Tracked, Again, subscribes=(Shipped,))


def test_a_module_subscribes_through_a_view_only_to_what_it_declared() -> None:
    handle = HandedOff("tracking")

    async def handle_it(_view: Tracked, _envelope: Envelope) -> None:
        return None

    with pytest.raises(BoundaryViolation, match=f"subscribes to {WIRE}, which it did not"):
        handle.subscribe(Tracked, handle_it)
