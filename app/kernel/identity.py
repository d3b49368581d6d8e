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
    """Signs access tokens for a caller; given to the module that owns credentials."""

    def issue(self, caller: Caller) -> AccessToken: ...
