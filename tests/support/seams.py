"""A test driver for the whole system through its gateway.

The app runs on the test's own event loop (httpx's ASGI transport and the app's lifespan):
Litestar 2's AsyncTestClient runs it on a portal thread with a second loop, so waiting for
the bus from the test would wait on an asyncio.Event set from another thread
(litestar-org/litestar#1920).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

import httpx
from httpx import Response
from litestar import Litestar

from app.kernel.identity import Caller, Role
from app.kernel.ids import new_id, utcnow
from app.kernel.sealing import new_key
from app.kernel.settings import Settings
from app.main import create_app
from app.modules.spec import Module
from app.modules.users.store import UsersStore
from app.modules.users.user import User
from app.runtime import Runtime
from tests.support.work import HandedOff

FAST = {
    "env": "test",
    "password_hashing": "argon2id-fast",
    "bus_retry_base_seconds": "0.001",
    "bus_retry_max_seconds": "0.01",
    "payment_retry_base_seconds": "0.001",
    "slow_card_seconds": "0.02",
    "replica_wait_seconds": "2",
    "rate_limit_per_minute": "0",
}
PASSWORD = "correct horse"
ADMIN_ID = "test-admin"

_emails = itertools.count(1)


def fast_settings(**overrides: Any) -> Settings:
    return Settings.from_env({}, **{**FAST, **overrides})


class Driver:
    """What a test does through the gateway's HTTP API, whichever way the system runs: in
    this process (Seams) or split into processes (tests/support/split.py)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client  # its requests go as an admin unless they carry a user's token
        self.admin_id = ADMIN_ID  # the id of that admin

    async def settle(self, timeout: float = 20.0) -> None:
        """Wait, bounded, until every event has been handled and every charge has ended."""
        raise NotImplementedError

    async def register(self, name: str = "Ada") -> dict[str, Any]:
        """A new user, logged in: the dict has its `token` and the `headers` to act as it."""
        email = f"{name.lower()}.{next(_emails)}@example.com"
        response = await self.client.post(
            "/api/users", json={"name": name, "email": email, "password": PASSWORD}
        )
        assert response.status_code == 201, response.text
        user: dict[str, Any] = response.json()
        return {**user, **await self.log_in(email)}

    async def log_in(self, email: str, password: str = PASSWORD) -> dict[str, Any]:
        response = await self.client.post(
            "/api/auth/token", json={"email": email, "password": password}
        )
        assert response.status_code == 200, response.text
        token = response.json()["access_token"]
        return {"token": token, "headers": {"Authorization": f"Bearer {token}"}}

    async def order(
        self,
        user: dict[str, Any],
        token: str = "tok_visa",
        items: Sequence[tuple[str, int, int]] = (("book", 2, 1250),),
        currency: str = "EUR",
    ) -> Response:
        return await self.client.post(
            "/api/orders",
            headers=user["headers"],
            json={
                "user_id": user["id"],
                "currency": currency,
                "payment_token": token,
                "items": [{"sku": s, "quantity": q, "unit_price": p} for s, q, p in items],
            },
        )

    async def place(
        self, user: dict[str, Any], token: str = "tok_visa", **kw: Any
    ) -> dict[str, Any]:
        response = await self.order(user, token, **kw)
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    async def get(self, path: str, **params: Any) -> Any:
        response = await self.client.get(path, params=params)
        assert response.status_code == 200, response.text
        return response.json()

    async def all_pages(self, path: str, **params: Any) -> list[dict[str, Any]]:
        return await all_pages(self.client, path, **params)


async def all_pages(client: httpx.AsyncClient, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every item of a paged list, following `next_cursor`, 200 a page."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {"limit": 200, **params, **({"cursor": cursor} if cursor else {})}
        response = await client.get(path, params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items


class Seams(Driver):
    """The whole system in this process, on the test's loop."""

    def __init__(self, app: Litestar, client: httpx.AsyncClient) -> None:
        super().__init__(client)
        self.app = app

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.app.state.runtime
        return runtime

    async def settle(self, timeout: float = 20.0) -> None:
        from app.split.nats_transport import NatsTransport

        bus = self.runtime.bus
        if isinstance(bus.transport, NatsTransport):  # quiet here is not quiet at the broker
            from tests.support.nats import settle

            await settle(bus, bus.transport, timeout)
        else:
            await bus.wait_quiet(timeout)

    def headers_for(self, user_id: str, role: Role = "user") -> dict[str, str]:
        """Act as this user id without logging in (for modules tested without users: with
        the users module, the gateway checks each token against the stored user)."""
        if users_store(self.runtime) is not None:
            raise AssertionError(
                "the gateway checks tokens against the users store here: act as a user from "
                "register(), or from unannounced_user() for one no other module has heard of"
            )
        token = self.runtime.tokens.issue(Caller(id=user_id, role=role), generation=1)
        return {"Authorization": f"Bearer {token.access_token}"}

    async def unannounced_user(self) -> dict[str, Any]:
        """A user the users store holds but no other module has heard of (its registration
        published no event): its `id` and the `headers` to act as it."""
        store = users_store(self.runtime)
        assert store is not None, "unannounced_user needs the users module"
        user_id = new_id()
        return {"id": user_id, "headers": await stored_identity(self.runtime, store, user_id)}


def users_store(runtime: Runtime) -> UsersStore | None:
    return next((m.store for m in runtime.modules if isinstance(m.store, UsersStore)), None)


async def stored_identity(
    runtime: Runtime, store: UsersStore, user_id: str, role: Role = "user"
) -> dict[str, str]:
    """The headers of a user written straight into the users store (no event published, no
    password that logs in), kept if it is there already (a data dir opened again)."""
    user = await store.get(user_id)
    if user is None:
        user, _registered = User.register(  # its event is not published: no one hears of it
            user_id=user_id,
            name=f"Test {role}",
            email=f"{user_id}@seams.test",
            password_hash="!",  # no password hashes to this: nobody logs in as it
            role=role,
            now=utcnow(),
            key=new_key(),
        )
        async with store.unit_of_work(HandedOff("users")) as work:
            await store.insert(work, user)
    token = runtime.tokens.issue(
        Caller(id=user.id, role=user.role), generation=user.token_generation
    )
    return {"Authorization": f"Bearer {token.access_token}"}


@asynccontextmanager
async def running(
    settings: Settings,
    modules: Sequence[Module] | None = None,
    prepare: Callable[[Runtime], None] | None = None,
) -> AsyncIterator[Seams]:
    """The app on this test's loop; `prepare` may add subscriptions before the bus starts."""
    app = create_app(settings, modules)
    runtime: Runtime = app.state.runtime
    if prepare is not None:
        prepare(runtime)
    # Litestar types its ASGI callable more narrowly than httpx's generic ASGI signature.
    transport = httpx.ASGITransport(app=cast(Any, app))
    async with (
        app.lifespan(),
        httpx.AsyncClient(transport=transport, base_url="http://testserver.local") as client,
    ):
        # The test's own requests go as an admin, who may read everything; users act with
        # their own tokens (Seams.register). With the users module the admin is a stored
        # user, as the gateway checks; without it, a signed identity is enough.
        store = users_store(runtime)
        if store is None:
            admin = runtime.tokens.issue(Caller(id=ADMIN_ID, role="admin"), generation=1)
            client.headers["Authorization"] = f"Bearer {admin.access_token}"
        else:
            client.headers.update(await stored_identity(runtime, store, ADMIN_ID, "admin"))
        yield Seams(app, client)
