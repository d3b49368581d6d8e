"""Who may see what: a user their own, an admin anyone's (the one rule the modules' reads and
lists, and the watch's journeys, ask a Caller for)."""

from __future__ import annotations

import pytest

from app.kernel.identity import NOTHING, Caller

ALICE = Caller(id="alice")
ADMIN = Caller(id="root", role="admin")


def test_a_user_sees_only_their_own_and_an_admin_anyones() -> None:
    assert ALICE.may_see("alice")
    assert not ALICE.may_see("bob")
    assert ADMIN.may_see("bob")


def test_what_no_user_owns_is_for_admins() -> None:
    assert ADMIN.may_see(None)
    assert not ALICE.may_see(None)


@pytest.mark.parametrize("asked", [None, "alice"])
def test_a_users_list_is_narrowed_to_their_own(asked: str | None) -> None:
    assert ALICE.owner_filter(asked) == "alice"


def test_a_user_asking_for_another_users_list_gets_nothing() -> None:
    assert ALICE.owner_filter("bob") is NOTHING


@pytest.mark.parametrize("asked", [None, "alice", "root"])
def test_an_admins_list_is_what_they_asked_for(asked: str | None) -> None:
    # None: everyone's.
    assert ADMIN.owner_filter(asked) == asked
