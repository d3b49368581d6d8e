"""The base of every domain event: a past-tense fact, immutable, carrying ids, not objects."""

from __future__ import annotations

from typing import ClassVar

import msgspec


class Event(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Subclass in a module's contracts.py. The class name is the event type on the wire."""

    version: ClassVar[int] = 1


def event_type_name(event_type: type[Event]) -> str:
    return event_type.__name__
