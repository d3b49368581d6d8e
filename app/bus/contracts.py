"""Event versions and upcasting: how a payload of an older version becomes the newest.

Each event type has one chain of upcasters, declared next to its contract in the producer's
contracts.py, one pure function per step (version n -> n + 1):

    @upcaster(OrderPlaced, from_version=1)
    def _placed_v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
        return {**payload, "item_count": None}

A consumer reads every version from the oldest its chain reaches up to the newest its code
knows; an envelope of a newer version raises UnknownVersion and is never misread (it is
dead-lettered, naming the version it needs, and can be replayed once that consumer is
upgraded). That is the schema registries' backward compatibility: upgrade consumers first
(docs/decisions/0026-event-versions.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

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
        newest = readable[-1]
        if version > newest:
            why = (
                f"{type_name} version {version} is newer than this consumer reads "
                f"({_span(readable)}): it needs a consumer that knows {type_name} "
                f"v{version}; upgrade the consumer, then replay this letter"
            )
        else:
            why = (
                f"{type_name} version {version} is older than this consumer reads "
                f"({_span(readable)}): it needs an upcaster from v{version} in the "
                f"contracts.py that declares {type_name}"
            )
        super().__init__(why)


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
        raise UnknownVersion(event_type_name(event_type), version, readable)
    name = event_type_name(event_type)
    for step in range(version, event_type.version):
        payload = _upcasters[(name, step)](dict(payload))
    return payload
