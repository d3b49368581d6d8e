"""One comparison key per address a person would read as the same: the users table's unique key,
the login lookup and the failed-login limits all use `email_key`."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.modules.users.emails import EMAIL_KEY_LENGTH, email_key, legacy_email_key
from app.modules.users.login_limits import LoginAttempts
from app.modules.users.module import module as users_module
from app.modules.users.store import UsersStore, users
from app.modules.users.store import email_key as store_email_key
from tests.support.scenario import scenario
from tests.support.stores import store_urls

PLAIN = "ada@example.com"
SPELLINGS = [
    " " + PLAIN,
    "\t" + PLAIN + "\n",
    "\u3000" + PLAIN,  # ideographic space
    "\u00a0" + PLAIN + "\u00a0",  # no-break space
    "\u2003" + PLAIN,  # em space
    "\u200b" + PLAIN,  # zero-width space
    "\ufeff" + PLAIN + "\u200d",  # BOM, zero-width joiner
    "ad\u200ba@example.com",  # invisible inside
    "a\u00add\u2060a@example.com",  # soft hyphen, word joiner inside
    "ADA@EXAMPLE.COM",
    "Ada@Example.Com",
    "\uff21\uff24\uff21@example.com",  # fullwidth A, D, A
    "ada\uff20example\uff0ecom",  # fullwidth @ and .
]


@pytest.mark.parametrize("spelling", SPELLINGS, ids=ascii)
def test_every_spelling_of_an_address_has_the_plain_key(spelling: str) -> None:
    assert email_key(spelling) == PLAIN


def test_the_store_and_the_login_limits_use_the_same_key_function() -> None:
    assert store_email_key is email_key
    limits = LoginAttempts(per_email_and_client=1, per_client=1000, per_email=1000)
    limits.failed(PLAIN, "client")
    for spelling in SPELLINGS:
        assert limits.retry_after(spelling, "client") > 0, ascii(spelling)


@given(st.emails())
def test_an_ascii_address_keeps_the_key_it_was_stored_under(email: str) -> None:
    assert email_key(email) == legacy_email_key(email)


@given(st.text(alphabet=st.sampled_from("a\u00df\ufdfa\u3000\u200b@."), max_size=254))
def test_a_key_always_fits_its_column_however_much_folding_expands_it(text: str) -> None:
    assert len(email_key(text)) <= EMAIL_KEY_LENGTH


@given(st.text(max_size=40))
def test_the_key_is_stable_and_matches_the_key_of_its_legacy_key(text: str) -> None:
    key = email_key(text)
    assert email_key(key) == key
    # Any input that finds a row by its legacy key shares that row's limits.
    assert email_key(legacy_email_key(text)) == key


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
