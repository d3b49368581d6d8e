"""The users domain: register, read and change users. No HTTP here, no SQL."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.bus import ModuleBus
from app.kernel.credentials import CurrentCredentials
from app.kernel.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthorized
from app.kernel.idempotency import Idempotency, IdempotentWrite, StoredResponse
from app.kernel.identity import AccessToken, Caller, Role, TokenIssuer
from app.kernel.ids import new_id, utcnow
from app.kernel.sealing import new_key
from app.modules.users.login_limits import LoginAttempts
from app.modules.users.passwords import Passwords
from app.modules.users.store import EmailTaken, Profile, UsersStore
from app.modules.users.user import User

MAX_UPDATE_RACES = 5


@dataclass(frozen=True)
class AdminAccount:
    """What create-admin did: `before` is the account it changed (None: it created one)."""

    user: User
    before: User | None


class UserService:
    def __init__(
        self,
        store: UsersStore,
        bus: ModuleBus,
        passwords: Passwords,
        idempotency: Idempotency,
        tokens: TokenIssuer,
        logins: LoginAttempts,
        credentials: CurrentCredentials,
    ) -> None:
        self._store = store
        self._bus = bus
        self._passwords = passwords
        self._idempotency = idempotency
        self._tokens = tokens
        self._logins = logins
        self._credentials = credentials

    async def log_in(self, *, email: str, password: str, client: str) -> AccessToken:
        """A bearer token for the right email and password; one answer for every failure,
        so a caller cannot tell an unknown email from a wrong password."""
        self._logins.check(email, client)
        user = await self._store.by_email(email)
        if user is None:  # the same cost either way: no timing oracle
            await self._passwords.hash(password, client=client)
        elif await self._passwords.verify(user.password_hash, password, client=client):
            self._logins.succeeded(email, client)
            caller = Caller(id=user.id, role=user.role)
            return self._tokens.issue(caller, generation=user.token_generation)
        self._logins.failed(email, client)
        raise Unauthorized("wrong email or password")

    async def create_admin(
        self, *, name: str, email: str, password: str, promote: bool = False
    ) -> AdminAccount:
        """An admin, from the command line: a new one; an existing admin given this password;
        or, only when `promote` says so, an existing user made admin (with this password).
        Whoever registered the email first must not become admin by accident: their
        earlier tokens die with the change."""
        existing = await self._store.by_email(email)
        if existing is None:
            user = await self.register(name=name, email=email, password=password, role="admin")
            return AdminAccount(user, None)
        if existing.role != "admin" and not promote:
            raise Conflict(
                f"{existing.email} belongs to {existing.name!r} ({existing.id}), who is not an "
                "admin: check it is the right account, then pass --promote to make it one"
            )
        user = await self._change(existing.id, password=password, role="admin")
        return AdminAccount(user, existing)

    def idempotent_write(
        self, *, scope: str, key: str, fingerprint: str, status: int, render: Any
    ) -> IdempotentWrite:
        return self._idempotency.write(scope, key, fingerprint, status, render)

    async def register_once(
        self, write: IdempotentWrite, *, name: str, email: str, password: str
    ) -> tuple[StoredResponse, bool]:
        """Register at most once per idempotency key: (the response, replayed?)."""

        async def execute() -> bytes:
            user = await self.register(name=name, email=email, password=password, remember=write)
            return write.render(user)

        return await self._idempotency.run(
            write, lambda: self._store.remembered(write.scope, write.key), execute
        )

    async def register(
        self,
        *,
        name: str,
        email: str,
        password: str,
        role: Role = "user",
        remember: IdempotentWrite | None = None,
    ) -> User:
        key = new_key()
        user, events = User.register(
            user_id=new_id(),
            name=name,
            email=email,
            password_hash=await self._passwords.hash(password),
            role=role,
            now=utcnow(),
            key=key,
        )
        try:
            async with self._store.unit_of_work(self._bus) as work:
                if remember is not None:
                    await work.remember(remember, user)
                await self._store.insert(work, user)
                await self._store.insert_key(work, user.id, key)
                work.publish(user, events)
        except EmailTaken:
            raise Conflict(f"a user with email {user.email!r} already exists") from None
        return user

    async def profile(self, user_id: str, caller: Caller) -> Profile:
        """A user sees only their own record (another's is a 404: existence is not leaked)."""
        profile = await self._store.profile(user_id) if caller.may_see(user_id) else None
        if profile is None:
            raise NotFound(f"no user {user_id!r}")
        return profile

    async def get(self, user_id: str, caller: Caller) -> User:
        """The whole record, for changes; the same 404 rule as `profile`."""
        user = await self._store.get(user_id) if caller.may_see(user_id) else None
        if user is None:
            raise NotFound(f"no user {user_id!r}")
        return user

    async def page(self, caller: Caller, *, after: str | None, limit: int) -> list[User]:
        owner = caller.owner_filter(None)
        if owner is None:  # an admin's: everyone's
            return await self._store.page(after=after, limit=limit)
        mine = await self._store.get(owner)
        return [mine] if mine is not None and (after is None or mine.id > after) else []

    async def update(
        self,
        user_id: str,
        caller: Caller,
        *,
        name: str | None = None,
        email: str | None = None,
        password: str | None = None,
        current_password: str | None = None,
        client: str = "unknown",
    ) -> User:
        """A change of name by the user or an admin; a change of email or password needs the
        account's current password, whoever asks (an admin's token cannot take an account
        over), and ends every token issued before it. A wrong one counts as a failed login
        (a stolen token is no way around the login limits)."""
        user = await self.get(user_id, caller)  # unknown or not theirs: a 404 before hashing
        if email is not None or password is not None:
            if current_password is None:
                raise InvalidInput(
                    "current_password", "required to change the email or the password"
                )
            self._logins.check(user.email, client)
            if not await self._passwords.verify(
                user.password_hash, current_password, client=client
            ):
                self._logins.failed(user.email, client)
                raise Forbidden("current_password is not this account's password")
        return await self._change(user_id, name=name, email=email, password=password)

    async def _change(
        self,
        user_id: str,
        *,
        name: str | None = None,
        email: str | None = None,
        password: str | None = None,
        role: Role | None = None,
    ) -> User:
        password_hash = None if password is None else await self._passwords.hash(password)
        # What a change of name or email says is sealed with the user's key.
        key = None if name is None and email is None else await self._store.key_of(user_id)
        for _ in range(MAX_UPDATE_RACES):
            current = await self._store.get(user_id)
            if current is None:
                raise NotFound(f"no user {user_id!r}")
            changed, events = current.change(
                utcnow(), name=name, email=email, password_hash=password_hash, role=role, key=key
            )
            if changed == current:
                return current
            try:
                async with self._store.unit_of_work(self._bus) as work:
                    if await self._store.update(work, changed, expected_version=current.version):
                        work.publish(changed, events)
                    else:
                        work.cancel()
            except EmailTaken:
                raise Conflict(f"a user with email {changed.email!r} already exists") from None
            if work.committed:
                if changed.token_generation != current.token_generation:
                    self._credentials.changed(user_id, changed.credentials)
                return changed
        raise Conflict(f"user {user_id!r} is being changed concurrently; try again")

    async def delete(self, user_id: str, caller: Caller) -> None:
        """Erase the user (by themself or an admin; anyone else gets the 404 of a user who
        does not exist, as does a second delete): their record, their key and their
        registration's stored response go in one commit with UserDeleted, which tells every
        other module to erase what it holds; their tokens are refused from then on
        (docs/decisions/0030-crypto-shredding.md)."""
        for _ in range(MAX_UPDATE_RACES):
            current = await self.get(user_id, caller)
            gone, events = current.delete(utcnow())
            async with self._store.unit_of_work(self._bus) as work:
                if await self._store.erase(work, current):
                    work.publish(gone, events)
                else:
                    work.cancel()
            if work.committed:
                self._credentials.changed(user_id, None)
                return
        raise Conflict(f"user {user_id!r} is being changed concurrently; try again")
