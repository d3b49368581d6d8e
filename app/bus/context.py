"""What caused the code that runs now: the request or the event being handled.

New envelopes take their correlation and causation from here, so one id follows an order
from the HTTP call to its notification without every function passing it along.
"""

from __future__ import annotations

from contextvars import ContextVar

from app.bus.envelope import Envelope

current_request_id: ContextVar[str | None] = ContextVar("current_request_id", default=None)
current_cause: ContextVar[Envelope | None] = ContextVar("current_cause", default=None)
current_module: ContextVar[str | None] = ContextVar("current_module", default=None)
