"""A user's record, as rules alone: what registering makes, what each change bumps, which
changes are announced and which end the tokens issued before them
(docs/decisions/0017-tokens-die-with-their-credentials.md). No store, no hashing, no loop."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from app.kernel.identity import Credentials, Role
from app.kernel.sealing import SealBroken, new_key, open_sealed
from app.modules.users.contracts import PersonalDetails, UserDeleted, UserRegistered, UserUpdated
from app.modules.users.user import User

REGISTERED_AT = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
LATER = REGISTERED_AT + timedelta(days=1)
KEY = new_key()


def details(event: UserRegistered | UserUpdated) -> PersonalDetails:
    """What the event says of the user, opened with their key."""
    assert event.personal is not None and event.name is None and event.email is None
    return msgspec.json.decode(
        open_sealed(KEY, event.personal, subject=event.user_id), type=PersonalDetails
    )


def registered() -> User:
    user, _ = User.register(
        user_id="user-1",
        name="Ada",
        email="ada@example.com",
        password_hash="hash-1",
        role="user",
        now=REGISTERED_AT,
        key=KEY,
    )
    return user


def test_registering_makes_version_1_at_generation_1_and_announces_it() -> None:
    user, events = User.register(
        user_id="user-1",
        name="Ada",
        email="  ada@example.com ",
        password_hash="hash-1",
        role="user",
        now=REGISTERED_AT,
        key=KEY,
    )

    assert user.email == "ada@example.com"  # trimmed
    assert (user.version, user.event_sequence, user.token_generation) == (1, 1, 1)
    assert (user.created_at, user.updated_at) == (REGISTERED_AT, REGISTERED_AT)
    assert user.credentials == Credentials(generation=1, role="user")
    [event] = events
    assert isinstance(event, UserRegistered)
    assert (event.user_id, event.registered_at) == ("user-1", "2025-01-01T12:00:00Z")
    assert details(event) == PersonalDetails("Ada", "ada@example.com")  # sealed, with the key


def test_a_change_to_what_it_already_is_changes_nothing() -> None:
    user = registered()

    changed, events = user.change(
        LATER, name="Ada", email=" ada@example.com", password_hash=None, role="user"
    )

    assert changed == user
    assert events == []


def test_a_new_name_is_announced_and_keeps_the_tokens() -> None:
    changed, events = registered().change(LATER, name="Ada Lovelace", key=KEY)

    assert changed.name == "Ada Lovelace"
    assert (changed.version, changed.event_sequence, changed.token_generation) == (2, 2, 1)
    assert changed.updated_at == LATER
    [event] = events
    assert isinstance(event, UserUpdated)
    assert details(event) == PersonalDetails("Ada Lovelace", "ada@example.com")


def test_a_new_email_is_announced_and_ends_the_tokens_issued_before() -> None:
    changed, events = registered().change(LATER, email=" ada@lovelace.example ", key=KEY)

    assert changed.email == "ada@lovelace.example"
    assert (changed.version, changed.event_sequence, changed.token_generation) == (2, 2, 2)
    [event] = events
    assert isinstance(event, UserUpdated)
    assert details(event) == PersonalDetails("Ada", "ada@lovelace.example")


@pytest.mark.parametrize(
    ("password_hash", "role"), [("hash-2", None), (None, "admin")], ids=["password", "role"]
)
def test_a_new_password_or_role_ends_the_tokens_but_is_not_announced(
    password_hash: str | None, role: Role | None
) -> None:
    user = registered()

    changed, events = user.change(LATER, password_hash=password_hash, role=role)

    assert (changed.version, changed.event_sequence, changed.token_generation) == (2, 1, 2)
    assert changed.credentials_differ(user)
    assert events == []


def test_a_promotion_gives_the_admin_role_at_a_new_generation() -> None:
    changed, _ = registered().change(LATER, password_hash="hash-2", role="admin")

    assert changed.credentials == Credentials(generation=2, role="admin")
    assert changed.password_hash == "hash-2"


def test_a_change_of_name_is_refused_without_the_key_to_seal_it() -> None:
    with pytest.raises(ValueError, match="sealed"):
        registered().change(LATER, name="Ada Lovelace")


def test_sealed_details_open_only_as_their_user() -> None:
    _, [event] = User.register(
        user_id="user-1",
        name="Ada",
        email="ada@example.com",
        password_hash="h",
        role="user",
        now=REGISTERED_AT,
        key=KEY,
    )
    assert isinstance(event, UserRegistered) and event.personal is not None
    assert "Ada" not in event.personal and "ada@example.com" not in event.personal
    with pytest.raises(SealBroken):
        open_sealed(KEY, event.personal, subject="user-2")
    with pytest.raises(SealBroken):
        open_sealed(new_key(), event.personal, subject="user-1")


def test_deleting_announces_user_deleted_as_the_next_event() -> None:
    user = registered()

    gone, [event] = user.delete(LATER)

    assert gone.event_sequence == user.event_sequence + 1
    assert event == UserDeleted(user_id="user-1", deleted_at="2025-01-02T12:00:00Z")
