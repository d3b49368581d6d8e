"""Who is calling. The gateway authenticates every request and hands modules a Caller;
modules never trust a user id from a body or a query (issue: the gateway as front door)."""

from __future__ import annotations

import enum
from typing import Final, Literal, Protocol, overload

import msgspec

Role = Literal["user", "admin"]


class Unseen(enum.Enum):
    NOTHING = "nothing"


# What a user asking for another user's list may see: nothing (an empty page, as if that
# user had none: neither a 403 nor a 404 tells them whether the user exists).
NOTHING: Final = Unseen.NOTHING


class Caller(msgspec.Struct, frozen=True):
    id: str
    role: Role = "user"

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def may_see(self, owner_id: str | None) -> bool:
        """Users see only what is theirs; admins see everything (what no user owns, too)."""
        return self.is_admin or owner_id == self.id

    @overload
    def owner_filter(self, asked: None) -> str | None: ...
    @overload
    def owner_filter(self, asked: str | None) -> str | Unseen | None: ...
    def owner_filter(self, asked: str | None) -> str | Unseen | None:
        """The owner a list is narrowed to, by the same rule as `may_see`: an admin's is the
        one asked for (None: everyone's); a user's, their own, or NOTHING when they ask for
        another user's."""
        if asked is None:
            return None if self.is_admin else self.id
        return asked if self.may_see(asked) else NOTHING


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
