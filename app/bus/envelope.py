"""The envelope every event travels in, in process or over a broker
(docs/decisions/0009-envelope.md)."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from app.bus.contracts import UnknownVersion, upcast
from app.bus.events import Event, event_type_name
from app.kernel.ids import isoformat, new_id, utcnow

E = TypeVar("E", bound=Event)


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


def open_payload(envelope: Envelope, event_type: type[E]) -> E:
    """The typed event inside an envelope, as the newest version the code knows: an older
    payload is upcast first (app/bus/contracts.py). UnknownVersion for a version this code
    cannot read (never a guess); MalformedEvent for a payload that is not that event."""
    try:
        payload = upcast(event_type, envelope.version, envelope.payload)
    except UnknownVersion:
        raise
    except (KeyError, TypeError, ValueError) as error:  # an old payload missing what a step reads
        raise MalformedEvent(
            f"{envelope.type} v{envelope.version} payload cannot be upcast: {error!r}"
        ) from error
    try:
        return msgspec.convert(payload, event_type)
    except msgspec.ValidationError as error:
        raise MalformedEvent(
            f"{envelope.type} v{envelope.version} payload is invalid: {error}"
        ) from error
