"""A user's record and the rules of its changes: what each change bumps, and which events it
causes. Pure: no store, no password hashing, no clock (the caller hashes and says the time).

Every change bumps `version` (optimistic writes); a change of name or email is announced
(UserUpdated, the next `event_sequence`); a change of credentials (password, email, role)
bumps `token_generation`, so every token issued before it dies
(docs/decisions/0017-tokens-die-with-their-credentials.md).
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from app.kernel.identity import Credentials, Role
from app.kernel.ids import isoformat
from app.modules.users.contracts import UserRegistered, UserUpdated

UserEvent = UserRegistered | UserUpdated


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
    ) -> tuple[User, list[UserEvent]]:
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
            user_id=user.id, name=user.name, email=user.email, registered_at=isoformat(now)
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
    ) -> tuple[User, list[UserEvent]]:
        """The user with what is given changed (None: kept); itself if nothing differs."""
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
        changed = msgspec.structs.replace(changed, event_sequence=self.event_sequence + 1)
        return changed, [UserUpdated(user_id=self.id, name=changed.name, email=changed.email)]

    def credentials_differ(self, other: User) -> bool:
        """Whether a token issued for one of the two must not pass for the other."""
        mine = (self.password_hash, self.email, self.role)
        return mine != (other.password_hash, other.email, other.role)
