"""The users module spec: what it publishes, what it needs, how it is built, its settings
and its command (create-admin)."""

from __future__ import annotations

import getpass
import sys
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec
from litestar.di import Provide

from app.kernel.credentials import CurrentCredentials
from app.kernel.errors import DomainError
from app.kernel.idempotency import Idempotency
from app.kernel.identity import Credentials
from app.modules.spec import Assembly, Command, CommandRun, Module, ModuleContext, Option, UserData
from app.modules.users.api import TokenController, UsersController
from app.modules.users.contracts import UserDeleted, UserRegistered, UserUpdated
from app.modules.users.keys import UserKeys
from app.modules.users.login_limits import LoginAttempts
from app.modules.users.passwords import Passwords, make_hasher
from app.modules.users.service import UserService
from app.modules.users.store import UsersStore


class UsersSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Its settings section (APP_PASSWORD_HASHING, APP_LOGIN_ATTEMPTS_PER_MINUTE, …)."""

    password_hashing: Literal["argon2id", "argon2id-fast"] = "argon2id"
    # Password hashes one process runs at once (more wait, a few; the rest get 503); 0: as
    # many as the CPUs, counting the threads each argon2 hash runs.
    password_hashes_at_once: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 0
    login_attempts_per_minute: Annotated[int, msgspec.Meta(ge=1)] = 10
    # Failed logins per client across all emails: stops one address trying many accounts, far
    # above what the people behind one office NAT mistype in a minute.
    login_failures_per_client_per_minute: Annotated[int, msgspec.Meta(ge=1)] = 100
    # Failed logins per email across all clients: caps guesses at one account from many addresses.
    login_failures_per_email_per_minute: Annotated[int, msgspec.Meta(ge=1)] = 50


def assemble(context: ModuleContext) -> Assembly:
    store: UsersStore = context.store
    settings: UsersSettings = context.section

    async def read_credentials(user_id: str) -> Credentials | None:
        found = await store.credentials(user_id)
        return None if found is None else Credentials(generation=found[0], role=found[1])

    credentials = CurrentCredentials(read_credentials)
    service = UserService(
        store,
        context.bus,
        Passwords(make_hasher(settings.password_hashing), settings.password_hashes_at_once),
        Idempotency(context.settings.idempotency_ttl_seconds, context.fingerprint_key),
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
        keyring=UserKeys(store),
    )


def create_admin(options: Mapping[str, Any], run: CommandRun) -> int:
    """An admin: there is no default password, so it is made here, on purpose. An email that
    belongs to a user who is not an admin is refused unless --promote: whoever registered it
    first must not become admin by accident."""
    if not options["email"]:
        return run.refuse("--email is required")
    try:
        password = new_password(options["password_stdin"])
    except ValueError as error:
        return run.refuse(str(error))
    try:
        account, store = run.operate(
            name=options["name"],
            email=options["email"],
            password=password,
            promote=options["promote"],
        )
    except DomainError as error:
        return run.refuse(error.detail)
    user, before = account.user, account.before
    if before is None:
        print(f"created admin {user.name} {user.email} ({user.id})")
    elif before.role != "admin":
        print(f"promoting {before.name} {before.email} ({user.id}): now an admin, with the new "
              "password; every token issued to the account before is refused")  # fmt: skip
    else:
        print(f"admin {user.email} ({user.id}): new password set; its earlier tokens are refused")
    settings = run.settings
    where = "memory (--ephemeral)" if settings.ephemeral else settings.data_dir
    print(f"written to data dir {where}, users store {store.display_url}")
    print(f"admin {user.email} can now log in at POST /api/auth/token")
    return 0


def new_password(from_stdin: bool) -> str:
    """The admin's password: one line of standard input, or asked twice on the terminal."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif not sys.stdin.isatty():
        raise ValueError(
            "no terminal to ask the password on: pass --password-stdin and write it to "
            "standard input"
        )
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("The same password again: ") != password:
            raise ValueError("the two passwords do not match; nothing was written")
    if not 8 <= len(password) <= 128:
        raise ValueError("the password needs 8-128 characters")
    return password


CREATE_ADMIN = Command(
    name="create-admin",
    help="create the first admin (or make an existing user one)",
    options=(
        Option("--email", "the admin's email"),
        Option("--name", "the admin's name", default="Admin"),
        Option(
            "--password-stdin",
            "read the password from standard input (otherwise it is asked for)",
            switch=True,
        ),
        Option(
            "--promote",
            "the email may belong to an existing user, who is made an admin (with the new "
            "password; the account's earlier tokens stop working)",
            switch=True,
        ),
    ),
    run=create_admin,
)

module = Module(
    name="users",
    description="Registration, profiles and credentials (SQL: SQLite or PostgreSQL).",
    publishes=(UserRegistered, UserUpdated, UserDeleted),
    subscribes=(),
    also_serves=("auth",),
    open_store=UsersStore,
    assemble=assemble,
    user_data=(UserData("/{user_id}", record=True),),
    settings=UsersSettings,
    commands=(CREATE_ADMIN,),
)
