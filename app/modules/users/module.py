"""The users module spec: what it publishes, what it needs, how it is built."""

from __future__ import annotations

from litestar.di import Provide

from app.kernel.credentials import CurrentCredentials
from app.kernel.idempotency import Idempotency
from app.kernel.identity import Credentials
from app.modules.spec import Assembly, Module, ModuleContext
from app.modules.users.api import TokenController, UsersController
from app.modules.users.contracts import UserRegistered, UserUpdated
from app.modules.users.login_limits import LoginAttempts
from app.modules.users.passwords import Passwords, make_hasher
from app.modules.users.service import UserService
from app.modules.users.store import UsersStore


def assemble(context: ModuleContext) -> Assembly:
    store: UsersStore = context.store
    settings = context.settings

    async def read_credentials(user_id: str) -> Credentials | None:
        found = await store.credentials(user_id)
        return None if found is None else Credentials(generation=found[0], role=found[1])

    credentials = CurrentCredentials(read_credentials)
    service = UserService(
        store,
        context.bus,
        Passwords(make_hasher(settings.password_hashing), settings.password_hashes_at_once),
        Idempotency(settings.idempotency_ttl_seconds, context.fingerprint_key),
        context.tokens,
        LoginAttempts(
            per_email_and_client=settings.login_attempts_per_minute,
            per_client=settings.login_failures_per_client_per_minute,
            per_email=settings.login_failures_per_email_per_minute,
        ),
        credentials,
    )
    return Assembly(
        route_handlers=[UsersController],
        also_routes={"auth": [TokenController]},
        commands={"create-admin": service.create_admin},
        dependencies={"users": Provide(lambda: service, use_cache=True, sync_to_thread=False)},
        outbox=store.outbox,
        purge=store.purge,
        credentials=credentials,
    )


module = Module(
    name="users",
    description="Registration, profiles and credentials (SQL: SQLite or PostgreSQL).",
    publishes=(UserRegistered, UserUpdated),
    subscribes=(),
    also_serves=("auth",),
    open_store=UsersStore,
    assemble=assemble,
)
