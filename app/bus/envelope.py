"""The envelope every event travels in, in process or over a broker
(docs/decisions/0009-envelope.md)."""

from __future__ import annotations

from typing import Any, TypeVar, overload

import msgspec

from app.bus.contracts import Reading, UnknownVersion, View, reading
from app.bus.events import Event, event_type_name
from app.kernel.ids import isoformat, new_id, utcnow

E = TypeVar("E", bound=Event)
V = TypeVar("V", bound=View)


class Envelope(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    type: str
    version: int
    occurred_at: str
    producer: str
    aggregate_id: str
    sequence: int
    correlation_id: str
    causation_id: str | None = None
    traceparent: str | None = None
    payload: dict[str, Any]


class MalformedEvent(ValueError):
    """An envelope or payload that does not decode to the declared event type."""


def wrap(
    event: Event,
    *,
    producer: str,
    aggregate_id: str,
    sequence: int,
    correlation_id: str,
    causation_id: str | None,
    traceparent: str | None = None,
) -> Envelope:
    return Envelope(
        id=new_id(),
        type=event_type_name(type(event)),
        version=type(event).version,
        occurred_at=isoformat(utcnow()),
        producer=producer,
        aggregate_id=aggregate_id,
        sequence=sequence,
        correlation_id=correlation_id,
        causation_id=causation_id,
        traceparent=traceparent,
        payload=msgspec.to_builtins(event),
    )


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Envelope)


def encode(envelope: Envelope) -> bytes:
    return _encoder.encode(envelope)


def decode(data: bytes | str) -> Envelope:
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as error:
        raise MalformedEvent(f"not an envelope: {error}") from error


@overload
def open_payload(envelope: Envelope, target: type[E]) -> E: ...


@overload
def open_payload(envelope: Envelope, target: type[V]) -> V: ...


def open_payload(envelope: Envelope, target: type[Event] | type[View]) -> Any:
    """The payload as a consumer's view of it (or as the event class itself): an older
    accepted version is upcast to the newest first (app/bus/contracts.py). UnknownVersion for
    a version the consumer does not accept (NewerVersion when it is newer: never a guess);
    MalformedEvent for a payload that is not that event."""
    return open_with(envelope, reading(target))


def open_with(envelope: Envelope, how: Reading) -> Any:
    """open_payload with the reading worked out once, as a consumer holds it."""
    try:
        return how.open(envelope.version, envelope.payload)
    except UnknownVersion:
        raise
    except msgspec.ValidationError as error:
        raise MalformedEvent(
            f"{envelope.type} v{envelope.version} payload is invalid: {error}"
        ) from error
    except (KeyError, TypeError, ValueError) as error:  # an old payload missing what a step reads
        raise MalformedEvent(
            f"{envelope.type} v{envelope.version} payload cannot be upcast: {error!r}"
        ) from error
