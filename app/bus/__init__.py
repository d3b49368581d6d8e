"""The event bus: envelopes, the in-process transport, consumers with retries, the outbox relay.

The NATS JetStream transport lives in app.split.nats_transport, imported only by the
composition root when APP_BUS_URL asks for it (nats-py costs ~90 ms to import)."""

from app.bus.bus import Bus, ModuleBus
from app.bus.consumer import ConsumerState, HandlerBroken
from app.bus.contracts import View
from app.bus.delivery_store import DeadLetter, DeliveryStore
from app.bus.envelope import Envelope
from app.bus.events import Event, event_type_name
from app.bus.retry import NotYet, RetryPolicy
from app.bus.watch import Journey, Observation, Subscription, Watch

__all__ = [
    "Bus",
    "ConsumerState",
    "DeadLetter",
    "DeliveryStore",
    "Envelope",
    "Event",
    "HandlerBroken",
    "Journey",
    "ModuleBus",
    "NotYet",
    "Observation",
    "RetryPolicy",
    "Subscription",
    "View",
    "Watch",
    "event_type_name",
]
