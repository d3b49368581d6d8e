"""Event versions and upcasting: how a payload of an older version becomes the newest.

Each event type has one chain of upcasters, declared next to its contract in the producer's
contracts.py, one pure function per step (version n -> n + 1):

    @upcaster(OrderPlaced, from_version=1)
    def _placed_v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
        return {**payload, "item_count": None}

Each consumer reads an event through its own View: a Struct of only the fields it needs
(unknown fields ignored: a tolerant reader), declaring the event it reads and the versions it
accepts. An older accepted version is upcast to the newest before the view is taken; an
envelope newer than any version the consumer accepts raises NewerVersion and is parked,
naming the version it needs, never misread, until an upgraded consumer handles it. That is
the schema registries' backward compatibility: upgrade consumers first
(docs/decisions/0026-event-versions.md, docs/decisions/0027-tolerant-readers.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import msgspec

from app.bus.events import Event, event_type_name

Payload = dict[str, Any]
Upcaster = Callable[[Payload], Payload]
U = TypeVar("U", bound=Upcaster)

# (wire name, from version) -> the step to from version + 1. Filled when a contracts.py is
# imported, which is whenever its event class is: whoever holds the class holds its chain.
_upcasters: dict[tuple[str, int], Upcaster] = {}


class UnknownVersion(ValueError):
    """An envelope of a version this code cannot read: newer than the event class it knows,
    or older than its upcasters reach. Never converted: a newer payload read with an older
    schema would be misread."""

    def __init__(self, type_name: str, version: int, readable: range) -> None:
        self.type_name = type_name
        self.version = version
        self.readable = readable
        super().__init__(self._why())

    def _why(self) -> str:
        return (
            f"{self.type_name} version {self.version} is older than this consumer reads "
            f"({_span(self.readable)}): it needs an upcaster from v{self.version} in the "
            f"contracts.py that declares {self.type_name}"
        )


class NewerVersion(UnknownVersion):
    """An envelope newer than any version the consumer accepts: its producer was upgraded
    before it. Parked, never dead-lettered nor misread, until a consumer that accepts it
    runs (docs/decisions/0027-tolerant-readers.md)."""

    def _why(self) -> str:
        return (
            f"{self.type_name} version {self.version} is newer than this consumer reads "
            f"({_span(self.readable)}): it needs a consumer that knows {self.type_name} "
            f"v{self.version}; parked until the consumer is upgraded (upgrade consumers "
            "first)"
        )


def _span(versions: range) -> str:
    if len(versions) == 1:
        return f"version {versions[0]}"
    return f"versions {versions[0]} to {versions[-1]}"


def upcaster(event_type: type[Event], *, from_version: int) -> Callable[[U], U]:
    """Register the one step that turns a payload of `from_version` into the next version.
    It must be declared in the module that declares the event (next to the contract)."""

    def register(step: U) -> U:
        name = event_type_name(event_type)
        if not 1 <= from_version < event_type.version:
            raise ValueError(
                f"an upcaster of {name} from v{from_version}: the event is at "
                f"v{event_type.version}, so steps go from v1 to v{event_type.version - 1}"
            )
        if step.__module__ != event_type.__module__:
            raise ValueError(
                f"the upcaster of {name} from v{from_version} is in {step.__module__}: it "
                f"belongs next to the contract, in {event_type.__module__}"
            )
        if (name, from_version) in _upcasters:
            raise ValueError(f"{name} has an upcaster from v{from_version} already")
        _upcasters[(name, from_version)] = step
        return step

    return register


def readable_versions(event_type: type[Event]) -> range:
    """The versions of an event a consumer holding this class reads: the newest, and every
    older one its chain of upcasters reaches without a gap."""
    name = event_type_name(event_type)
    oldest = event_type.version
    while (name, oldest - 1) in _upcasters:
        oldest -= 1
    return range(oldest, event_type.version + 1)


def upcast(event_type: type[Event], version: int, payload: Payload) -> Payload:
    """The payload as the newest version of its event, or UnknownVersion. Each step gets a
    copy, so a stored envelope's payload is never changed in place."""
    if version == event_type.version:  # nearly every event: nothing to walk
        return payload
    readable = readable_versions(event_type)
    if version not in readable:
        raise _unknown(event_type_name(event_type), version, readable)
    name = event_type_name(event_type)
    for step in range(version, event_type.version):
        payload = _upcasters[(name, step)](dict(payload))
    return payload


def _unknown(type_name: str, version: int, readable: range) -> UnknownVersion:
    if version > readable[-1]:
        return NewerVersion(type_name, version, readable)
    return UnknownVersion(type_name, version, readable)


class View(msgspec.Struct, frozen=True, kw_only=True):
    """What one consumer reads of one event: only the fields it needs, so a field the
    producer adds (or one this consumer ignores going away) changes nothing for it. Declared
    in the consumer's package, named in its Module's `reads`:

        class PlacedOrder(View, frozen=True, kw_only=True):
            event = OrderPlaced  # the contract it reads
            accepts = (1, 2)  # the versions this consumer knows; newer ones are parked

            order_id: str
            total: int

    Unknown fields are ignored (no forbid_unknown_fields): a tolerant reader. Which fields
    each consumer reads is derived from its views and checked against the producers'
    contracts (tests/architecture/test_contract_readers.py).
    """

    event: ClassVar[type[Event]]
    accepts: ClassVar[tuple[int, ...]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = vars(cls)
        event = own.get("event")
        if not (isinstance(event, type) and issubclass(event, Event)):
            raise TypeError(
                f"view {cls.__qualname__} must declare the event it reads "
                "(e.g. event = OrderPlaced)"
            )
        _check_accepts(cls.__qualname__, event, own.get("accepts"))


def _check_accepts(view: str, event: type[Event], accepts: object) -> None:
    """A view accepts consecutive versions its code can read: none newer than the contract
    it holds, none older than the contract's upcasters reach."""
    name = event_type_name(event)
    if (
        not isinstance(accepts, tuple)
        or not accepts
        or not all(isinstance(v, int) for v in accepts)
        or list(accepts) != list(range(accepts[0], accepts[0] + len(accepts)))
    ):
        raise TypeError(
            f"view {view} must declare the versions of {name} it accepts, consecutive and "
            "ascending (e.g. accepts = (1, 2))"
        )
    readable = readable_versions(event)
    if accepts[0] < readable[0] or accepts[-1] > readable[-1]:
        raise TypeError(
            f"view {view} accepts {name} v{accepts[0]} to v{accepts[-1]}, but this code "
            f"reads {_span(readable)}: a version beyond the contract is unknown here, and "
            "one before the upcasters' reach needs an upcaster next to the contract"
        )


@dataclass(frozen=True)
class Reading:
    """How a consumer opens a payload: the contract it upcasts through, the versions it
    accepts and the Struct it converts the newest payload into (its view, or, for a
    consumer subscribed with the contract itself, the contract read strictly)."""

    event: type[Event]
    accepts: range
    target: type[msgspec.Struct]

    def open(self, version: int, payload: Payload) -> Any:
        """The payload as the target, or UnknownVersion (NewerVersion for a version newer
        than it accepts). Conversion errors are the caller's to name (msgspec's)."""
        if version not in self.accepts:
            raise _unknown(event_type_name(self.event), version, self.accepts)
        return msgspec.convert(upcast(self.event, version, payload), self.target)


def reading(target: type[Event] | type[View]) -> Reading:
    """The reading of a view, or of an event class subscribed as it is (every version its
    upcasters reach, strictly: tests and tools; modules read through views)."""
    if issubclass(target, View):
        accepts = range(target.accepts[0], target.accepts[-1] + 1)
        return Reading(target.event, accepts, target)
    return Reading(target, readable_versions(target), target)


def event_of(target: type[Event] | type[View]) -> type[Event]:
    """The contract a subscription reads: a view's event, or the event itself."""
    return target.event if issubclass(target, View) else target
