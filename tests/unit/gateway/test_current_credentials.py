"""The gateway checks every token against its user's current credentials, kept in a small
memory: how long it trusts what it read, what a change does at once, and what a token of
another generation or role gets."""

from __future__ import annotations

from typing import Any

import pytest
from litestar.exceptions import NotAuthorizedException

from app.gateway.auth import BearerTokens, JwtIssuer, jwt_auth
from app.kernel.credentials import CurrentCredentials
from app.kernel.identity import Caller, Credentials
from app.kernel.settings import Settings

pytestmark = pytest.mark.anyio

SECRET = "a-secret-key-of-enough-length-for-hs256-0123456789"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Store:
    """What the users store holds, and how often it was read."""

    def __init__(self) -> None:
        self.users: dict[str, Credentials] = {"ada": Credentials(generation=1, role="user")}
        self.reads = 0

    async def read(self, user_id: str) -> Credentials | None:
        self.reads += 1
        return self.users.get(user_id)


async def test_what_was_read_is_trusted_for_the_ttl_then_read_again() -> None:
    store, clock = Store(), Clock()
    memory = CurrentCredentials(store.read, ttl_seconds=1.0, clock=clock)

    first = await memory.current("ada")
    store.users["ada"] = Credentials(generation=2, role="user")  # another process's change
    clock.now += 0.5
    within = await memory.current("ada")
    clock.now += 0.6
    after = await memory.current("ada")

    assert [first, within, after] == [
        Credentials(generation=1, role="user"),
        Credentials(generation=1, role="user"),
        Credentials(generation=2, role="user"),
    ]
    assert store.reads == 2


async def test_a_change_this_process_made_counts_at_once() -> None:
    store, clock = Store(), Clock()
    memory = CurrentCredentials(store.read, ttl_seconds=1.0, clock=clock)
    await memory.current("ada")
    heard: list[tuple[str, Credentials | None]] = []
    memory.on_change(lambda user_id, credentials: heard.append((user_id, credentials)))

    memory.changed("ada", Credentials(generation=2, role="admin"))

    assert await memory.current("ada") == Credentials(generation=2, role="admin")
    assert heard == [("ada", Credentials(generation=2, role="admin"))]


async def test_a_read_that_raced_a_change_never_brings_the_old_generation_back() -> None:
    async def stale_read(user_id: str) -> Credentials | None:
        racing.changed(user_id, Credentials(generation=2, role="user"))  # commits meanwhile
        return Credentials(generation=1, role="user")

    racing = CurrentCredentials(stale_read, ttl_seconds=1.0, clock=Clock())

    assert (await racing.current("ada")) == Credentials(generation=2, role="user")
    assert (await racing.current("ada")) == Credentials(generation=2, role="user")


async def test_the_memory_is_bounded() -> None:
    store = Store()
    store.users.update({f"u{n}": Credentials(generation=1, role="user") for n in range(5)})
    memory = CurrentCredentials(store.read, size=2)

    for n in range(5):
        await memory.current(f"u{n}")
    reads = store.reads
    await memory.current("u0")  # forgotten: read again

    assert store.reads == reads + 1


def scope_with(token: str) -> Any:
    return {"type": "http", "headers": [(b"authorization", f"Bearer {token}".encode())]}


async def test_a_token_of_an_earlier_generation_is_refused_and_the_role_is_the_stores() -> None:
    store = Store()
    auth = jwt_auth(Settings.from_env({}), SECRET)
    tokens = BearerTokens(auth, CurrentCredentials(store.read))
    issuer = JwtIssuer(auth)
    claims_admin = issuer.issue(Caller(id="ada", role="admin"), generation=1).access_token
    gone = issuer.issue(Caller(id="bob", role="user"), generation=1).access_token

    assert await tokens.caller(scope_with(claims_admin)) == Caller(id="ada", role="user")

    store.users["ada"] = Credentials(generation=2, role="user")
    fresh = BearerTokens(auth, CurrentCredentials(store.read))
    with pytest.raises(NotAuthorizedException, match="log in again") as refused:
        await fresh.caller(scope_with(claims_admin))
    assert 'error="invalid_token"' in (refused.value.headers or {})["WWW-Authenticate"]
    with pytest.raises(NotAuthorizedException, match="no longer exists"):
        await fresh.caller(scope_with(gone))
