"""One comparison key per address a person would read as the same: the users table's unique key,
the login lookup and the failed-login limits all use `email_key`."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.modules.users.emails import EMAIL_KEY_LENGTH, email_key, legacy_email_key
from app.modules.users.login_limits import LoginAttempts
from app.modules.users.store import email_key as store_email_key

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
