"""The users module booted alone behind the gateway: registration keeps only an argon2id
hash that never leaves the module, emails are unique whatever their case, and lists page."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher

from app.bus.envelope import decode
from app.kernel.ids import new_id, utcnow
from app.modules.users.module import module as users_module
from app.modules.users.store import EmailTaken, UserRow, UsersStore, outbox
from tests.support.seams import Seams, fast_settings, running

pytestmark = pytest.mark.anyio

PASSWORD = "correct horse battery"
_emails = itertools.count(1)


@pytest.fixture
async def seams(anyio_backend: str) -> AsyncIterator[Seams]:
    async with running(fast_settings(ephemeral="true"), modules=[users_module]) as seams:
        yield seams


def store_of(seams: Seams) -> UsersStore:
    store = next(m.store for m in seams.runtime.modules if m.module.name == "users")
    return cast(UsersStore, store)


def an_email() -> str:
    return f"user.{next(_emails)}@example.com"


async def register(
    seams: Seams, email: str, name: str = "Ada", password: str = PASSWORD
) -> dict[str, Any]:
    response = await seams.client.post(
        "/api/users", json={"name": name, "email": email, "password": password}
    )
    assert response.status_code == 201, response.text
    user: dict[str, Any] = response.json()
    return user


async def test_registration_answers_201_without_the_password_or_its_hash(seams: Seams) -> None:
    email = an_email()

    response = await seams.client.post(
        "/api/users", json={"name": "Ada", "email": email, "password": PASSWORD}
    )

    assert response.status_code == 201
    user = response.json()
    assert set(user) == {"id", "name", "email", "created_at"}
    assert (user["name"], user["email"]) == ("Ada", email)
    for answer in (
        response,
        await seams.client.get(f"/api/users/{user['id']}"),
        await seams.client.get("/api/users"),
    ):
        assert PASSWORD not in answer.text
        assert "argon2" not in answer.text
        assert "password" not in answer.text


async def test_the_stored_hash_is_argon2id_and_verifies_the_password(seams: Seams) -> None:
    user = await register(seams, an_email())

    stored = await store_of(seams).get(user["id"])

    assert stored is not None
    assert stored.password_hash.startswith("$argon2id$")
    assert PasswordHasher().verify(stored.password_hash, PASSWORD)
    assert PASSWORD not in stored.password_hash


async def test_the_registration_event_carries_no_password_or_hash(seams: Seams) -> None:
    user = await register(seams, an_email())
    await seams.settle()

    async with store_of(seams).reading() as connection:
        rows = (await connection.execute(sa.select(outbox.c.envelope))).scalars().all()

    [event] = [decode(row) for row in rows]
    assert event.type == "UserRegistered"
    assert set(event.payload) == {"user_id", "name", "email", "registered_at"}
    assert event.payload["user_id"] == user["id"]


async def test_an_email_is_unique_whatever_its_case(seams: Seams) -> None:
    first = await register(seams, "Ada.Case@Example.com")

    response = await seams.client.post(
        "/api/users",
        json={"name": "Eve", "email": "ada.case@example.COM", "password": PASSWORD},
    )

    assert response.status_code == 409
    assert response.headers["content-type"].startswith("application/problem+json")
    assert [u["id"] for u in await seams.all_pages("/api/users")] == [first["id"]]


async def test_surrounding_spaces_never_make_a_taken_email_new(seams: Seams) -> None:
    first = await register(seams, "spaced@example.com")

    response = await seams.client.post(
        "/api/users",
        json={"name": "Eve", "email": "  Spaced@Example.com ", "password": PASSWORD},
    )

    # Refused either as malformed (400) or as taken (409): never a second account.
    assert response.status_code in (400, 409), response.text
    assert [u["id"] for u in await seams.all_pages("/api/users")] == [first["id"]]


async def test_the_store_compares_emails_trimmed_and_case_folded(seams: Seams) -> None:
    store = store_of(seams)
    await register(seams, "folded@example.com")
    now = utcnow()
    twin = UserRow(
        id=new_id(),
        name="Eve",
        email="  FOLDED@example.com ",
        password_hash="x",
        created_at=now,
        updated_at=now,
        version=1,
        event_sequence=1,
    )

    with pytest.raises(EmailTaken):
        await store.insert(twin, [])


async def test_patch_changes_name_and_email_and_frees_the_old_email(seams: Seams) -> None:
    old_email, new_email = an_email(), an_email()
    user = await register(seams, old_email)

    response = await seams.client.patch(
        f"/api/users/{user['id']}", json={"name": "Ada Lovelace", "email": new_email}
    )

    assert response.status_code == 200, response.text
    assert (response.json()["name"], response.json()["email"]) == ("Ada Lovelace", new_email)
    read = await seams.get(f"/api/users/{user['id']}")
    assert (read["name"], read["email"]) == ("Ada Lovelace", new_email)
    taken = await seams.client.post(
        "/api/users", json={"name": "Eve", "email": new_email.upper(), "password": PASSWORD}
    )
    assert taken.status_code == 409
    await register(seams, old_email, name="Eve")


async def test_patch_cannot_take_another_users_email_in_any_case(seams: Seams) -> None:
    first = await register(seams, an_email())
    second = await register(seams, an_email(), name="Bob")

    response = await seams.client.patch(
        f"/api/users/{second['id']}", json={"email": first["email"].upper()}
    )

    assert response.status_code == 409
    assert response.headers["content-type"].startswith("application/problem+json")
    assert (await seams.get(f"/api/users/{second['id']}"))["email"] == second["email"]


async def test_a_user_may_change_the_case_of_their_own_email(seams: Seams) -> None:
    user = await register(seams, an_email())

    response = await seams.client.patch(
        f"/api/users/{user['id']}", json={"email": user["email"].upper()}
    )

    assert response.status_code == 200, response.text
    assert response.json()["email"] == user["email"].upper()


async def test_patch_password_replaces_the_hash(seams: Seams) -> None:
    user = await register(seams, an_email())

    response = await seams.client.patch(
        f"/api/users/{user['id']}", json={"password": "another secret"}
    )

    assert response.status_code == 200
    assert "another secret" not in response.text
    stored = await store_of(seams).get(user["id"])
    assert stored is not None
    assert PasswordHasher().verify(stored.password_hash, "another secret")


async def test_pages_of_one_walk_every_user_exactly_once(seams: Seams) -> None:
    registered = [(await register(seams, an_email()))["id"] for _ in range(5)]

    seen: list[str] = []
    cursor: str | None = None
    for _ in range(len(registered) + 1):  # bounded: one page per user, then the end
        params: dict[str, Any] = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        page = await seams.get("/api/users", **params)
        assert len(page["items"]) <= 1
        seen.extend(user["id"] for user in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert cursor is None
    assert seen == sorted(registered)
