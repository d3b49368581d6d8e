"""A user's record and the rules of its changes: what each change bumps, and which events it
causes. Pure: no store, no password hashing, no clock (the caller hashes and says the time).

Every change bumps `version` (optimistic writes); a change of name or email is announced
(UserUpdated, the next `event_sequence`); a change of credentials (password, email, role)
bumps `token_generation`, so every token issued before it dies
(docs/decisions/0017-tokens-die-with-their-credentials.md). What the events say of the
person is sealed with the user's own key (docs/decisions/0030-crypto-shredding.md).
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from app.kernel.identity import Credentials, Role
from app.kernel.ids import isoformat
from app.modules.users.contracts import (
    PersonalDetails,
    UserDeleted,
    UserRegistered,
    UserUpdated,
)

UserEvent = UserRegistered | UserUpdated | UserDeleted


class User(msgspec.Struct, frozen=True):
    id: str
    name: str
    email: str
    password_hash: str
    role: Role
    created_at: datetime
    updated_at: datetime
    version: int  # every change
    # Every published event: what consumers order by (docs/decisions/0009-envelope.md).
    event_sequence: int
    token_generation: int = 1  # every change of credentials (password, email, role)

    @classmethod
    def register(
        cls,
        *,
        user_id: str,
        name: str,
        email: str,
        password_hash: str,
        role: Role,
        now: datetime,
        key: bytes,
    ) -> tuple[User, list[UserEvent]]:
        """A new user; `key` is theirs, sealing what its event says of them."""
        user = cls(
            id=user_id,
            name=name,
            email=email.strip(),
            password_hash=password_hash,
            role=role,
            created_at=now,
            updated_at=now,
            version=1,
            event_sequence=1,
        )
        registered = UserRegistered(
            user_id=user.id, registered_at=isoformat(now), personal=user.sealed_details(key)
        )
        return user, [registered]

    @property
    def credentials(self) -> Credentials:
        """What the gateway checks a token against: its generation and the role now."""
        return Credentials(generation=self.token_generation, role=self.role)

    def change(
        self,
        now: datetime,
        *,
        name: str | None = None,
        email: str | None = None,
        password_hash: str | None = None,
        role: Role | None = None,
        key: bytes | None = None,
    ) -> tuple[User, list[UserEvent]]:
        """The user with what is given changed (None: kept); itself if nothing differs.
        A change of name or email is announced sealed with `key`, the user's."""
        changed = msgspec.structs.replace(
            self,
            name=self.name if name is None else name,
            email=self.email if email is None else email.strip(),
            password_hash=password_hash or self.password_hash,
            role=self.role if role is None else role,
        )
        if changed == self:
            return self, []
        changed = msgspec.structs.replace(changed, updated_at=now, version=self.version + 1)
        if changed.credentials_differ(self):  # every token issued for the old ones dies
            changed = msgspec.structs.replace(changed, token_generation=self.token_generation + 1)
        if (changed.name, changed.email) == (self.name, self.email):
            return changed, []
        if key is None:
            raise ValueError("a change of name or email is announced sealed: the key is needed")
        changed = msgspec.structs.replace(changed, event_sequence=self.event_sequence + 1)
        return changed, [UserUpdated(user_id=self.id, personal=changed.sealed_details(key))]

    def delete(self, now: datetime) -> tuple[User, list[UserEvent]]:
        """The user as last seen, its event sequence moved on: UserDeleted, the last event
        about them, ordered after every other."""
        gone = msgspec.structs.replace(self, event_sequence=self.event_sequence + 1)
        return gone, [UserDeleted(user_id=self.id, deleted_at=isoformat(now))]

    def sealed_details(self, key: bytes) -> str:
        return PersonalDetails(self.name, self.email).sealed(key, self.id)

    def credentials_differ(self, other: User) -> bool:
        """Whether a token issued for one of the two must not pass for the other."""
        mine = (self.password_hash, self.email, self.role)
        return mine != (other.password_hash, other.email, other.role)
