"""Identity at the gateway: JWT bearer tokens checked against their accounts' current
credentials, the caller handed to modules, the admin guard, and per-caller rate limits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal, NamedTuple

import jwt
from litestar import Request
from litestar.config.app import AppConfig
from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import DefineMiddleware
from litestar.middleware._utils import build_exclude_path_pattern, should_bypass_middleware
from litestar.middleware.rate_limit import RateLimitConfig
from litestar.security.jwt import JWTAuth, Token
from litestar.types import ASGIApp, Receive, Scope, Send

from app.gateway.headers import first_header
from app.kernel.expiring import Expiring
from app.kernel.identity import AccessToken, Caller, CredentialsDirectory, Role
from app.kernel.settings import Settings

PUBLIC = [
    "^/health$",
    "^/ready$",
    "^/schema",
    "^/metrics$",
]  # plus handlers marked opt={"public": True}


REALM = 'Bearer realm="seams"'
LOG_IN = "log in again (POST /api/auth/token)"
# Which requests a token is checked on: "required" (401 without one), "optional" (checked
# when sent, else anonymous), or None (not at all: public routes).
Need = Literal["required", "optional"] | None


class TokenRefused(NotAuthorizedException):
    """A 401 with its RFC 6750 challenge: the realm alone when no token was sent, else
    `invalid_token` and why (the detail has no quote or backslash, as the header needs)."""

    def __init__(self, detail: str, *, token_sent: bool = True) -> None:
        challenge = (
            f'{REALM}, error="invalid_token", error_description="{detail}"' if token_sent else REALM
        )
        super().__init__(detail, headers={"WWW-Authenticate": challenge})


class Verified(NamedTuple):
    """What a token that passed the full check says: whose, which generation of their
    credentials it was issued for, and the role it claims."""

    user_id: str
    generation: int
    role: Role


class VerifiedTokens(Expiring[str, Verified]):
    """Tokens this process has verified in full (signature, algorithm, expiry, claims) and
    what each one says, keyed by the exact token string.

    Verifying a token costs ~75 µs of PyJWT, more than the rest of a read's gateway; looking
    it up here costs under 1 µs. An entry is good until its token's `exp` (PyJWT's rule:
    expired once now >= exp), then dropped, so an expired token goes through the full check
    again and is refused. Only tokens that passed the check get in, and at most `size` of
    them: the oldest goes first. What is remembered depends on the token alone; whether its
    user's credentials still hold is asked on every request (BearerTokens).
    """

    def __init__(self, size: int = 4096, clock: Callable[[], float] | None = None) -> None:
        super().__init__(size, clock)


@dataclass
class GatewayJWTAuth(JWTAuth[Caller, Token]):
    """Litestar's JWTAuth for its configuration, token class and OpenAPI security scheme;
    the gateway places its own authentication middleware (`identity_middleware`) after the
    request context, so a refused token is logged and counted like any other request."""

    verified_tokens: VerifiedTokens = field(default_factory=VerifiedTokens)

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        app_config = super().on_app_init(app_config)
        del app_config.middleware[0]  # Litestar's own JWT middleware, which it put first
        return app_config


class BearerTokens:
    """The caller a request's `Authorization: Bearer <token>` names, or why it is refused.

    A token is verified in full once and remembered (VerifiedTokens); on every request its
    user's current credentials are then asked of `credentials` (the module owning them, or
    its processes in split mode): a token issued for an earlier generation (the password,
    email or role changed since) or for a user who is gone is refused, and the role is the
    one the credentials hold, not the token's claim. With no `credentials` (a runtime
    without the module owning credentials) the signature alone decides."""

    def __init__(self, auth: GatewayJWTAuth, credentials: CredentialsDirectory | None) -> None:
        self._auth = auth
        self._memory = auth.verified_tokens
        self._credentials = credentials

    async def caller(self, scope: Scope) -> Caller | None:
        """None: no Authorization header at all."""
        header = first_header(scope, b"authorization")
        if header is None:
            return None
        scheme, _, encoded = header.partition(" ")
        encoded = encoded.strip(" ")
        if scheme.lower() != "bearer" or not encoded or " " in encoded:
            raise TokenRefused("the Authorization header must be: Bearer <token>")
        verified = self._memory.get(encoded) or self._verify(encoded)
        if self._credentials is None:
            return Caller(id=verified.user_id, role=verified.role)
        current = await self._credentials.current(verified.user_id)
        if current is None:
            raise TokenRefused(f"the token names a user who no longer exists: {LOG_IN}")
        if current.generation != verified.generation:
            raise TokenRefused(
                "the token was issued before the password, email or role of its account "
                f"changed: {LOG_IN}"
            )
        return Caller(id=verified.user_id, role=current.role)

    def _verify(self, encoded: str) -> Verified:
        auth = self._auth
        try:
            token = auth.token_cls.decode(
                encoded_token=encoded, secret=auth.token_secret, algorithm=auth.algorithm
            )
        except NotAuthorizedException as error:
            if isinstance(error.__cause__, jwt.ExpiredSignatureError):
                raise TokenRefused(f"the token expired: {LOG_IN}") from None
            raise TokenRefused(f"the token is not valid: {LOG_IN}") from None
        role = token.extras.get("role", "user")
        generation = token.extras.get("gen", 0)  # tokens from before generations: none
        if role not in ("user", "admin") or type(generation) is not int:
            raise TokenRefused(f"the token is not valid: {LOG_IN}")
        verified = Verified(token.sub, generation, role)
        self._memory.put(encoded, verified, token.exp.timestamp())
        return verified


class Authentication:
    """Names the caller of each request that needs one (scope["user"]). A refusal is not
    raised here but kept in scope["auth"], for RefuseUnauthenticated to raise after the
    rate limit has counted the request: a client sending bad tokens is limited too."""

    def __init__(self, app: ASGIApp, tokens: BearerTokens, needs: Callable[[Scope], Need]) -> None:
        self.app = app
        self.tokens = tokens
        self.needs = needs

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        need = self.needs(scope)
        if need is not None:
            try:
                caller = await self.tokens.caller(scope)
                if caller is None and need == "required":
                    raise TokenRefused(
                        "this route needs a token: Authorization: Bearer <token>, from "
                        "POST /api/auth/token",
                        token_sent=False,
                    )
            except TokenRefused as refusal:
                scope["user"] = None
                scope["auth"] = refusal
            else:
                scope["user"] = caller
                scope["auth"] = None
        await self.app(scope, receive, send)


class RefuseUnauthenticated:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = scope.get("auth")
        if isinstance(refusal, TokenRefused):
            raise refusal
        await self.app(scope, receive, send)


def protected(auth: GatewayJWTAuth) -> Callable[[Scope], Need]:
    """Every route needs a token except Litestar's exclusions: PUBLIC paths, handlers with
    opt={"public": True}, and OPTIONS (a preflight carries no credentials)."""
    exclude = build_exclude_path_pattern(exclude=auth.exclude)

    def needs(scope: Scope) -> Need:
        bypass = should_bypass_middleware(
            exclude_http_methods=["OPTIONS"],
            exclude_opt_key=auth.exclude_opt_key,
            exclude_path_pattern=exclude,
            scope=scope,
            scopes={ScopeType.HTTP, ScopeType.WEBSOCKET},
        )
        return None if bypass else "required"

    return needs


def identity_middleware(
    settings: Settings,
    auth: GatewayJWTAuth,
    credentials: CredentialsDirectory | None,
    needs: Callable[[Scope], Need],
) -> list[DefineMiddleware]:
    """Authentication, the rate limit, then the refusal of a bad token: in that order, and
    inside the request context (which logs and counts every answer)."""
    limits = rate_limit(settings)
    return [
        DefineMiddleware(Authentication, tokens=BearerTokens(auth, credentials), needs=needs),
        *([limits.middleware] if limits is not None else []),
        DefineMiddleware(RefuseUnauthenticated),
    ]


def jwt_auth(settings: Settings, secret_key: str) -> GatewayJWTAuth:
    return GatewayJWTAuth(
        retrieve_user_handler=_never_called,
        token_secret=secret_key,
        exclude=PUBLIC,
        exclude_opt_key="public",
        default_token_expiration=timedelta(minutes=settings.access_token_minutes),
        description="A bearer token from POST /api/auth/token.",
    )


async def _never_called(_token: Token, _connection: ASGIConnection[Any, Any, Any, Any]) -> None:
    raise AssertionError("the gateway authenticates with BearerTokens, not JWTAuth's middleware")


class JwtIssuer:
    """The TokenIssuer handed to the module that owns credentials."""

    def __init__(self, auth: JWTAuth[Caller, Token]) -> None:
        self._auth = auth

    def issue(self, caller: Caller, *, generation: int) -> AccessToken:
        token = self._auth.create_token(
            identifier=caller.id, token_extras={"role": caller.role, "gen": generation}
        )
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
