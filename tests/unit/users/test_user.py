"""A user's record, as rules alone: what registering makes, what each change bumps, which
changes are announced and which end the tokens issued before them
(docs/decisions/0017-tokens-die-with-their-credentials.md). No store, no hashing, no loop."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.kernel.identity import Credentials, Role
from app.modules.users.contracts import UserRegistered, UserUpdated
from app.modules.users.user import User

REGISTERED_AT = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
LATER = REGISTERED_AT + timedelta(days=1)


def registered() -> User:
    user, _ = User.register(
        user_id="user-1",
        name="Ada",
        email="ada@example.com",
        password_hash="hash-1",
        role="user",
        now=REGISTERED_AT,
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
    )

    assert user.email == "ada@example.com"  # trimmed
    assert (user.version, user.event_sequence, user.token_generation) == (1, 1, 1)
    assert (user.created_at, user.updated_at) == (REGISTERED_AT, REGISTERED_AT)
    assert user.credentials == Credentials(generation=1, role="user")
    assert events == [
        UserRegistered(
            user_id="user-1",
            name="Ada",
            email="ada@example.com",
            registered_at="2025-01-01T12:00:00Z",
        )
    ]


def test_a_change_to_what_it_already_is_changes_nothing() -> None:
    user = registered()

    changed, events = user.change(
        LATER, name="Ada", email=" ada@example.com", password_hash=None, role="user"
    )

    assert changed == user
    assert events == []


def test_a_new_name_is_announced_and_keeps_the_tokens() -> None:
    changed, events = registered().change(LATER, name="Ada Lovelace")

    assert changed.name == "Ada Lovelace"
    assert (changed.version, changed.event_sequence, changed.token_generation) == (2, 2, 1)
    assert changed.updated_at == LATER
    assert events == [UserUpdated(user_id="user-1", name="Ada Lovelace", email="ada@example.com")]


def test_a_new_email_is_announced_and_ends_the_tokens_issued_before() -> None:
    changed, events = registered().change(LATER, email=" ada@lovelace.example ")

    assert changed.email == "ada@lovelace.example"
    assert (changed.version, changed.event_sequence, changed.token_generation) == (2, 2, 2)
    assert events == [UserUpdated(user_id="user-1", name="Ada", email="ada@lovelace.example")]


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
