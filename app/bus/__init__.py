"""The event bus: envelopes, the in-process transport, consumers with retries, the outbox relay."""

from app.bus.bus import Bus, ModuleBus
from app.bus.delivery_store import DeadLetter, DeliveryStore
from app.bus.envelope import Envelope
from app.bus.events import Event, event_type_name
from app.bus.retry import RetryPolicy

__all__ = [
    "Bus",
    "DeadLetter",
    "DeliveryStore",
    "Envelope",
    "Event",
    "ModuleBus",
    "RetryPolicy",
    "event_type_name",
]
