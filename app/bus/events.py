"""The base of every domain event: a past-tense fact, immutable, carrying ids, not objects.

An event's identity on the wire is what it declares, never its Python class name: renaming
a class must not change a NATS subject, a stored envelope's type or a consumer's binding
(docs/decisions/0026-event-versions.md).
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec


class Event(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Subclass in a module's contracts.py, declaring both class variables:

        class OrderPlaced(Event, frozen=True, kw_only=True):
            wire_name = "OrderPlaced"  # the envelope's type and the subject's last token
            version = 2  # the version producers publish; older ones are upcast to it

    A new version changes the fields; app/bus/contracts.py says how older payloads become it.
    """

    wire_name: ClassVar[str]
    version: ClassVar[int]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = vars(cls)
        missing = [name for name in ("wire_name", "version") if name not in own]
        if missing:
            raise TypeError(
                f"event {cls.__qualname__} must declare {' and '.join(missing)} itself "
                '(e.g. wire_name = "OrderPlaced", version = 1): the wire never uses the '
                "class name, and a subclass is a new contract"
            )
        if not isinstance(own["wire_name"], str) or not own["wire_name"]:
            raise TypeError(f"event {cls.__qualname__}: wire_name must be a non-empty string")
        if not isinstance(own["version"], int) or own["version"] < 1:
            raise TypeError(f"event {cls.__qualname__}: version must be an integer from 1")


def event_type_name(event_type: type[Event]) -> str:
    """The type an envelope carries and a subject ends with: the declared wire name."""
    return event_type.wire_name
