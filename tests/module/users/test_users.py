"""The users module booted alone behind the gateway: registration keeps only an argon2id
hash that never leaves the module, emails are unique whatever their case, and lists page.
What it publishes is recorded: a UserRegistered per registration, a UserUpdated (next
sequence) per name or email change, nothing for a password change."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher

from app.bus.envelope import decode
from app.kernel.ids import new_id, utcnow
from app.modules.users.contracts import (
    PersonalDetails,
    UserRegistered,
    UserUpdated,
    personal_details,
)
from app.modules.users.module import module as users_module
from app.modules.users.store import EmailTaken, UsersStore, outbox
from app.modules.users.user import User
from tests.support.scenario import Scenario, scenario
from tests.support.work import HandedOff

pytestmark = pytest.mark.anyio

PASSWORD = "correct horse battery"
_emails = itertools.count(1)


@pytest.fixture
async def users(anyio_backend: str) -> AsyncIterator[Scenario]:
    async with scenario(users_module) as alone:
        yield alone


def store_of(users: Scenario) -> UsersStore:
    return cast(UsersStore, users.store)


async def registered_ids(users: Scenario) -> list[str]:
    """Every user listed, but the driver's own admin."""
    listed = await users.seams.all_pages("/api/users")
    return [user["id"] for user in listed if user["id"] != users.seams.admin_id]


def an_email() -> str:
    return f"user.{next(_emails)}@example.com"


async def register(
    users: Scenario, email: str, name: str = "Ada", password: str = PASSWORD
) -> dict[str, Any]:
    response = await users.client.post(
        "/api/users", json={"name": name, "email": email, "password": password}
    )
    assert response.status_code == 201, response.text
    user: dict[str, Any] = response.json()
    return user


async def test_registration_answers_201_without_the_password_or_its_hash(users: Scenario) -> None:
    email = an_email()

    response = await users.client.post(
        "/api/users", json={"name": "Ada", "email": email, "password": PASSWORD}
    )

    assert response.status_code == 201
    user = response.json()
    assert set(user) == {"id", "name", "email", "created_at"}
    assert (user["name"], user["email"]) == ("Ada", email)
    for answer in (
        response,
        await users.client.get(f"/api/users/{user['id']}"),
        await users.client.get("/api/users"),
    ):
        assert PASSWORD not in answer.text
        assert "argon2" not in answer.text
        assert "password" not in answer.text


async def test_the_stored_hash_is_argon2id_and_verifies_the_password(users: Scenario) -> None:
    user = await register(users, an_email())

    stored = await store_of(users).get(user["id"])

    assert stored is not None
    assert stored.password_hash.startswith("$argon2id$")
    assert PasswordHasher().verify(stored.password_hash, PASSWORD)
    assert PASSWORD not in stored.password_hash


async def test_the_registration_event_carries_no_password_or_hash(users: Scenario) -> None:
    user = await register(users, an_email())
    await users.settle()

    async with store_of(users).reading() as connection:
        rows = (await connection.execute(sa.select(outbox.c.envelope))).scalars().all()

    [event] = [decode(row) for row in rows]
    assert event.type == "UserRegistered"
    assert set(event.payload) == {"user_id", "personal", "name", "email", "registered_at"}
    assert (event.payload["name"], event.payload["email"]) == (None, None)  # sealed instead
    assert event.payload["user_id"] == user["id"]


async def test_registering_publishes_one_user_registered_without_password_or_hash(
    users: Scenario,
) -> None:
    email = an_email()
    user = await register(users, email, name="Ada")
    await users.settle()

    [registered] = users.published_events()
    assert isinstance(registered, UserRegistered)
    assert registered.user_id == user["id"]
    assert await personal_details(registered, users.seams.runtime.personal_data) == PersonalDetails(
        "Ada", email
    )
    [envelope] = users.published
    assert (envelope.producer, envelope.aggregate_id, envelope.sequence) == (
        "users",
        user["id"],
        1,
    )
    assert not [key for key in envelope.payload if "password" in key or "hash" in key]
    assert PASSWORD not in str(envelope.payload)
    assert "argon2" not in str(envelope.payload)


async def test_a_name_and_email_change_publishes_one_user_updated_with_sequence_2(
    users: Scenario,
) -> None:
    user = await register(users, an_email())
    await users.settle()
    new_email = an_email()

    response = await users.client.patch(
        f"/api/users/{user['id']}",
        json={"name": "Ada Lovelace", "email": new_email, "current_password": PASSWORD},
    )
    await users.settle()

    assert response.status_code == 200, response.text
    assert [type(event) for event in users.published_events()] == [UserRegistered, UserUpdated]
    updated = users.published_events()[1]
    assert isinstance(updated, UserUpdated) and updated.user_id == user["id"]
    assert await personal_details(updated, users.seams.runtime.personal_data) == PersonalDetails(
        "Ada Lovelace", new_email
    )
    envelope = users.published[1]
    assert (envelope.aggregate_id, envelope.sequence) == (user["id"], 2)
    assert not [key for key in envelope.payload if "password" in key or "hash" in key]


async def test_a_password_only_change_publishes_nothing(users: Scenario) -> None:
    user = await register(users, an_email())
    await users.settle()
    before = list(users.published)

    response = await users.client.patch(
        f"/api/users/{user['id']}",
        json={"password": "another secret", "current_password": PASSWORD},
    )
    await users.settle()

    assert response.status_code == 200, response.text
    assert users.published == before
    assert [e.type for e in before] == ["UserRegistered"]
    stored = await store_of(users).get(user["id"])
    assert stored is not None
    assert stored.event_sequence == 1


async def test_an_email_is_unique_whatever_its_case(users: Scenario) -> None:
    first = await register(users, "Ada.Case@Example.com")

    response = await users.client.post(
        "/api/users",
        json={"name": "Eve", "email": "ada.case@example.COM", "password": PASSWORD},
    )

    assert response.status_code == 409
    assert response.headers["content-type"].startswith("application/problem+json")
    assert await registered_ids(users) == [first["id"]]


async def test_surrounding_spaces_never_make_a_taken_email_new(users: Scenario) -> None:
    first = await register(users, "spaced@example.com")

    response = await users.client.post(
        "/api/users",
        json={"name": "Eve", "email": "  Spaced@Example.com ", "password": PASSWORD},
    )

    # Refused either as malformed (400) or as taken (409): never a second account.
    assert response.status_code in (400, 409), response.text
    assert await registered_ids(users) == [first["id"]]


async def test_the_store_compares_emails_trimmed_and_case_folded(users: Scenario) -> None:
    store = store_of(users)
    await register(users, "folded@example.com")
    now = utcnow()
    twin = User(
        id=new_id(),
        name="Eve",
        email="  FOLDED@example.com ",
        password_hash="x",
        role="user",
        created_at=now,
        updated_at=now,
        version=1,
        event_sequence=1,
    )

    with pytest.raises(EmailTaken):
        async with store.unit_of_work(HandedOff("users")) as work:
            await store.insert(work, twin)


async def test_patch_changes_name_and_email_and_frees_the_old_email(users: Scenario) -> None:
    old_email, new_email = an_email(), an_email()
    user = await register(users, old_email)

    response = await users.client.patch(
        f"/api/users/{user['id']}",
        json={"name": "Ada Lovelace", "email": new_email, "current_password": PASSWORD},
    )

    assert response.status_code == 200, response.text
    assert (response.json()["name"], response.json()["email"]) == ("Ada Lovelace", new_email)
    read = await users.seams.get(f"/api/users/{user['id']}")
    assert (read["name"], read["email"]) == ("Ada Lovelace", new_email)
    taken = await users.client.post(
        "/api/users", json={"name": "Eve", "email": new_email.upper(), "password": PASSWORD}
    )
    assert taken.status_code == 409
    await register(users, old_email, name="Eve")


async def test_patch_cannot_take_another_users_email_in_any_case(users: Scenario) -> None:
    first = await register(users, an_email())
    second = await register(users, an_email(), name="Bob")

    response = await users.client.patch(
        f"/api/users/{second['id']}",
        json={"email": first["email"].upper(), "current_password": PASSWORD},
    )

    assert response.status_code == 409
    assert response.headers["content-type"].startswith("application/problem+json")
    assert (await users.seams.get(f"/api/users/{second['id']}"))["email"] == second["email"]


async def test_a_user_may_change_the_case_of_their_own_email(users: Scenario) -> None:
    user = await register(users, an_email())

    response = await users.client.patch(
        f"/api/users/{user['id']}",
        json={"email": user["email"].upper(), "current_password": PASSWORD},
    )

    assert response.status_code == 200, response.text
    assert response.json()["email"] == user["email"].upper()


async def test_patch_password_replaces_the_hash(users: Scenario) -> None:
    user = await register(users, an_email())

    response = await users.client.patch(
        f"/api/users/{user['id']}",
        json={"password": "another secret", "current_password": PASSWORD},
    )

    assert response.status_code == 200
    assert "another secret" not in response.text
    stored = await store_of(users).get(user["id"])
    assert stored is not None
    assert PasswordHasher().verify(stored.password_hash, "another secret")


async def test_pages_of_one_walk_every_user_exactly_once(users: Scenario) -> None:
    registered = [(await register(users, an_email()))["id"] for _ in range(5)]

    seen: list[str] = []
    cursor: str | None = None
    for _ in range(len(registered) + 2):  # bounded: one page per user and the admin, then the end
        params: dict[str, Any] = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        page = await users.seams.get("/api/users", **params)
        assert len(page["items"]) <= 1
        seen.extend(user["id"] for user in page["items"] if user["id"] != users.seams.admin_id)
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert cursor is None
    assert seen == sorted(registered)
