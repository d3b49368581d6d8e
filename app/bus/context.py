"""What caused the code that runs now: the request or the event being handled.

New envelopes take their correlation and causation from here, so one id follows an order
from the HTTP call to its notification without every function passing it along.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from app.bus.envelope import Envelope

current_request_id: ContextVar[str | None] = ContextVar("current_request_id", default=None)
current_cause: ContextVar[Envelope | None] = ContextVar("current_cause", default=None)
current_module: ContextVar[str | None] = ContextVar("current_module", default=None)


@contextmanager
def flow_of(envelope: Envelope | None, module: str | None = None) -> Iterator[None]:
    """Meanwhile, what runs is about `envelope` (in `module`): log lines carry its flow's
    request and correlation id, whichever task or request the code runs in. None: nothing."""
    if envelope is None:
        yield
        return
    cause = current_cause.set(envelope)
    request = current_request_id.set(envelope.correlation_id)
    within = current_module.set(module) if module is not None else None
    try:
        yield
    finally:
        if within is not None:
            current_module.reset(within)
        current_request_id.reset(request)
        current_cause.reset(cause)
