"""Identity at the gateway: JWT bearer tokens (Litestar's JWTAuth), the caller handed to
modules, the admin guard, and per-caller rate limits (decision 12)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.exceptions import PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware.rate_limit import RateLimitConfig
from litestar.security.jwt import JWTAuth, Token

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


def jwt_auth(settings: Settings, secret_key: str) -> JWTAuth[Caller, Token]:
    return JWTAuth[Caller, Token](
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
