"""The events the users module publishes: its public face."""

from __future__ import annotations

from app.bus import Event


class UserRegistered(Event, frozen=True, kw_only=True):
    wire_name = "UserRegistered"
    version = 1

    user_id: str
    name: str
    email: str
    registered_at: str


class UserUpdated(Event, frozen=True, kw_only=True):
    wire_name = "UserUpdated"
    version = 1

    user_id: str
    name: str
    email: str
