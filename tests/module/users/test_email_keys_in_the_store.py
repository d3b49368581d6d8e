"""Email keys on the users module's own store: an account stored under the key an older
version computed still logs in, and an address whose folding outgrows the column registers
without a 500 (the pure key rules are in tests/unit/users/test_email_key.py)."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest

from app.modules.users.emails import legacy_email_key
from app.modules.users.module import module as users_module
from app.modules.users.store import UsersStore, users
from tests.support.scenario import scenario
from tests.support.stores import store_urls


@pytest.mark.anyio
async def test_an_account_stored_under_the_old_key_still_logs_in_as_before() -> None:
    email = "\uff2a\uff4f.legacy@example.com"  # fullwidth "Jo": the old key kept it fullwidth
    async with scenario(users_module) as alone:
        registered = await alone.client.post(
            "/api/users", json={"name": "Jo", "email": email, "password": "correct horse"}
        )
        assert registered.status_code == 201, registered.text
        store = cast(UsersStore, alone.store)
        async with store.transaction() as connection:  # as a row written before the new key
            await connection.execute(
                users.update()
                .where(users.c.id == registered.json()["id"])
                .values(email_key=legacy_email_key(email))
            )

        answer = await alone.client.post(
            "/api/auth/token", json={"email": email, "password": "correct horse"}
        )

        assert answer.status_code == 200, answer.text


@pytest.mark.anyio
@pytest.mark.services
async def test_an_email_whose_folding_outgrows_the_column_registers_without_a_500(
    tmp_path: Path,
) -> None:
    email = "\u00df" * 130 + "@example.com"  # casefolded, each \u00df is "ss": 272 characters
    async with (
        store_urls("postgresql", tmp_path) as urls,  # PostgreSQL enforces the column's length
        scenario(users_module, **urls) as alone,
    ):
        answer = await alone.client.post(
            "/api/users", json={"name": "Long", "email": email, "password": "correct horse"}
        )

        assert answer.status_code == 201, answer.text
        logged_in = await alone.client.post(
            "/api/auth/token", json={"email": " " + email, "password": "correct horse"}
        )
        assert logged_in.status_code == 200, logged_in.text
