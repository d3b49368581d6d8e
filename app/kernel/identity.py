"""Who is calling. The gateway authenticates every request and hands modules a Caller;
modules never trust a user id from a body or a query (issue: the gateway as front door)."""

from __future__ import annotations

from typing import Literal, Protocol

import msgspec

Role = Literal["user", "admin"]


class Caller(msgspec.Struct, frozen=True):
    id: str
    role: Role = "user"

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def may_see(self, owner_id: str) -> bool:
        """Users see only what is theirs; admins see everything."""
        return self.is_admin or owner_id == self.id


class AccessToken(msgspec.Struct, frozen=True):
    access_token: str
    token_type: Literal["bearer"]
    expires_in: int


class TokenIssuer(Protocol):
    """Signs access tokens for a caller; given to the module that owns credentials. A token
    carries the generation of the caller's credentials it was issued for."""

    def issue(self, caller: Caller, *, generation: int) -> AccessToken: ...


class Credentials(msgspec.Struct, frozen=True):
    """What the owner of credentials says about a user now: tokens issued for another
    generation are dead (a password, email or role changed since), and the role is this one,
    whatever a token claims."""

    generation: int
    role: Role


class CredentialsDirectory(Protocol):
    """Offered to the gateway by the module that owns credentials, so that it checks every
    token against the user's current credentials without knowing that module."""

    async def current(self, user_id: str) -> Credentials | None:
        """None: no such user (any more)."""
        ...
