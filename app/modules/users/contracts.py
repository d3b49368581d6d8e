"""The events the users module publishes: its public face.

A user's name and email travel sealed with that user's own key (`personal`), which the users
module keeps and erases with the user: every stored copy of an event about them is then
unreadable (docs/decisions/0030-crypto-shredding.md). A consumer that needs them opens them
with `personal_details`, through the PersonalData it was handed, and keeps its own copy only
until it hears UserDeleted.
"""

from __future__ import annotations

from typing import Any, Protocol

import msgspec

from app.bus import Event
from app.bus.contracts import upcaster
from app.kernel.sealing import PersonalData, seal


class PersonalDetails(msgspec.Struct, frozen=True):
    """What `personal` seals (as JSON): everything personal an event about a user says."""

    name: str
    email: str

    def sealed(self, key: bytes, user_id: str) -> str:
        return seal(key, msgspec.json.encode(self), subject=user_id)


class UserRegistered(Event, frozen=True, kw_only=True):
    """v2 seals the name and email (`personal`); `name` and `email` are plain only in an
    event published as v1, before sealing, and None since."""

    wire_name = "UserRegistered"
    version = 2

    user_id: str
    registered_at: str
    personal: str | None = None
    name: str | None = None
    email: str | None = None


@upcaster(UserRegistered, from_version=1)
def _registered_v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    """A v1 event carried them in plain: nothing was sealed."""
    return {**payload, "personal": None}


class UserUpdated(Event, frozen=True, kw_only=True):
    """v2 seals the name and email, as UserRegistered v2 does."""

    wire_name = "UserUpdated"
    version = 2

    user_id: str
    personal: str | None = None
    name: str | None = None
    email: str | None = None


@upcaster(UserUpdated, from_version=1)
def _updated_v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    """A v1 event carried them in plain: nothing was sealed."""
    return {**payload, "personal": None}


class UserDeleted(Event, frozen=True, kw_only=True):
    """The user and their key are gone: every module erases what it holds of them."""

    wire_name = "UserDeleted"
    version = 1

    user_id: str
    deleted_at: str


class SaysWho(Protocol):
    """What an event about a user (or a consumer's view of it) carries of them."""

    @property
    def user_id(self) -> str: ...
    @property
    def personal(self) -> str | None: ...
    @property
    def name(self) -> str | None: ...
    @property
    def email(self) -> str | None: ...


async def personal_details(event: SaysWho, personal_data: PersonalData) -> PersonalDetails | None:
    """The name and email an event says; None when the user's key is erased (the user is
    gone, and so is what the event said of them)."""
    if event.personal is None:  # published as v1, in plain
        if event.name is None or event.email is None:
            return None
        return PersonalDetails(event.name, event.email)
    opened = await personal_data.open(event.user_id, event.personal)
    return None if opened is None else msgspec.json.decode(opened, type=PersonalDetails)
