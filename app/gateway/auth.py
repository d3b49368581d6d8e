"""Identity at the gateway: JWT bearer tokens (Litestar's JWTAuth), the caller handed to
modules, the admin guard, and per-caller rate limits (decision 12)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.exceptions import PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import DefineMiddleware
from litestar.middleware._utils import should_bypass_middleware
from litestar.middleware.authentication import AuthenticationResult
from litestar.middleware.rate_limit import RateLimitConfig
from litestar.security.jwt import JWTAuth, JWTAuthenticationMiddleware, Token
from litestar.types import Receive, Scope, Send

from app.kernel.identity import AccessToken, Caller
from app.settings import Settings

PUBLIC = [
    "^/health$",
    "^/ready$",
    "^/schema",
    "^/metrics$",
]  # plus handlers marked opt={"public": True}


async def caller_of(token: Token, _connection: ASGIConnection[Any, Any, Any, Any]) -> Caller | None:
    role = token.extras.get("role", "user")
    if role not in ("user", "admin"):
        return None
    return Caller(id=token.sub, role=role)


class VerifiedTokens:
    """Tokens this process has verified in full (signature, algorithm, expiry, claims) and
    the caller each one names, keyed by the exact token string.

    Verifying a token costs ~75 µs of PyJWT, more than the rest of a read's gateway; looking
    it up here costs under 1 µs. An entry is good until its token's `exp` (PyJWT's rule:
    expired once now >= exp), then dropped, so an expired token goes through the full check
    again and is refused. Only tokens that passed the check get in, and at most `size` of
    them: the oldest goes first. The caller depends on the token alone (`caller_of` reads
    its claims), so remembering it changes no answer.
    """

    def __init__(self, size: int = 4096, clock: Callable[[], float] = time.time) -> None:
        self.size = size
        self._clock = clock
        self._entries: dict[str, tuple[AuthenticationResult, float]] = {}

    def get(self, encoded_token: str) -> AuthenticationResult | None:
        entry = self._entries.get(encoded_token)
        if entry is None:
            return None
        result, expires_at = entry
        if self._clock() < expires_at:
            return result
        del self._entries[encoded_token]
        return None

    def add(self, encoded_token: str, result: AuthenticationResult, expires_at: float) -> None:
        if encoded_token not in self._entries and len(self._entries) >= self.size:
            del self._entries[next(iter(self._entries))]
        self._entries[encoded_token] = (result, expires_at)

    def __len__(self) -> int:
        return len(self._entries)


class RememberingJWTMiddleware(JWTAuthenticationMiddleware):
    """Litestar's JWT middleware, which verifies only the tokens it has not verified yet.

    Which requests it checks is Litestar's own rule (`should_bypass_middleware`: excluded
    paths, `opt={"public": True}`, OPTIONS). A remembered token is found straight in the raw
    headers; anything else (no header, a new, expired or invalid token) takes Litestar's path
    unchanged, and only what passes it is remembered."""

    def __init__(self, *, verified_tokens: VerifiedTokens, **options: Any) -> None:
        super().__init__(**options)
        self.verified_tokens = verified_tokens
        self._header = self.auth_header.lower().encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not should_bypass_middleware(
            exclude_http_methods=self.exclude_http_methods,
            exclude_opt_key=self.exclude_opt_key,
            exclude_path_pattern=self.exclude,
            scope=scope,
            scopes=self.scopes,
        ):
            result = self._remembered(scope)
            if result is None:
                result = await self.authenticate_request(ASGIConnection(scope))
            scope["user"] = result.user
            scope["auth"] = result.auth
        await self.app(scope, receive, send)

    def _remembered(self, scope: Scope) -> AuthenticationResult | None:
        for name, value in scope["headers"]:
            if name == self._header:  # the first one, as Litestar's Headers.get reads it
                return self.verified_tokens.get(value.decode("latin-1").partition(" ")[-1])
        return None

    async def authenticate_token(
        self, encoded_token: str, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        result = await super().authenticate_token(encoded_token, connection)
        if self.revoked_token_handler is None:  # a revocable token is checked every time
            token: Token = result.auth
            self.verified_tokens.add(encoded_token, result, token.exp.timestamp())
        return result


@dataclass
class RememberingJWTAuth(JWTAuth[Caller, Token]):
    """JWTAuth whose middleware (one instance per route) shares one VerifiedTokens."""

    authentication_middleware_class: type[JWTAuthenticationMiddleware] = field(
        default=RememberingJWTMiddleware
    )
    verified_tokens: VerifiedTokens = field(default_factory=VerifiedTokens)

    @property
    def middleware(self) -> DefineMiddleware:
        define = super().middleware
        define.kwargs["verified_tokens"] = self.verified_tokens
        return define


def jwt_auth(settings: Settings, secret_key: str) -> JWTAuth[Caller, Token]:
    return RememberingJWTAuth(
        retrieve_user_handler=caller_of,
        token_secret=secret_key,
        exclude=PUBLIC,
        exclude_opt_key="public",
        default_token_expiration=timedelta(minutes=settings.access_token_minutes),
        description="A bearer token from POST /api/auth/token.",
    )


class JwtIssuer:
    """The TokenIssuer handed to the module that owns credentials."""

    def __init__(self, auth: JWTAuth[Caller, Token]) -> None:
        self._auth = auth

    def issue(self, caller: Caller) -> AccessToken:
        token = self._auth.create_token(identifier=caller.id, token_extras={"role": caller.role})
        lifetime = int(self._auth.default_token_expiration.total_seconds())
        return AccessToken(access_token=token, token_type="bearer", expires_in=lifetime)


def admins_only(connection: ASGIConnection[Any, Caller, Any, Any], _: BaseRouteHandler) -> None:
    if connection.scope.get("method") == "OPTIONS":
        return  # a preflight carries no credentials and reaches no handler
    if not connection.user.is_admin:
        raise PermissionDeniedException("this route is for admins")


def rate_limit(settings: Settings) -> RateLimitConfig | None:
    if settings.rate_limit_per_minute == 0:
        return None

    def who(request: Request[Any, Any, Any]) -> str:
        user = request.scope.get("user")
        if isinstance(user, Caller):
            return f"caller:{user.id}"
        return f"client:{request.client.host if request.client else 'unknown'}"

    return RateLimitConfig(
        rate_limit=("minute", settings.rate_limit_per_minute),
        identifier_for_request=who,
        exclude=PUBLIC,
    )
