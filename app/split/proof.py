"""The gateway's proof of identity, for module processes in split mode.

In split mode a module process is reachable on its own port, but only the gateway may talk
to it. The gateway authenticates the caller (the user's bearer token), then signs a short
proof for each request it forwards: who the caller is (or that there is none, for
registration and login), the client's address, and the method and path it forwards. A
module process accepts a request only with a valid proof for that very method and path;
anything else is a 401, whatever bearer token it carries.

The proof is an HS256 JWT signed with a key derived from APP_SECRET_KEY, not the key user
tokens are signed with: a user token is never a proof, and a proof is never a user token.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any

import jwt
from litestar.enums import ScopeType
from litestar.exceptions import NotAuthorizedException
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from app.gateway.headers import first_header
from app.kernel.expiring import Expiring
from app.kernel.identity import Caller

HEADER = "x-seams-gateway-proof"
AUDIENCE = "seams-modules"
ALGORITHM = "HS256"
LIFETIME_SECONDS = 30
# Proofs kept for reuse on each side (docs/decisions/0037-request-path-cost.md): the gateway
# issues the same proof again for the same caller, client and request while more than half
# its life is left; a module checks a proof it has already checked with a look-up.
CACHE_SIZE = 4096
# What a module process answers without a proof: probes and scrapes, not the API.
OPEN_PATHS = ("/health", "/ready", "/metrics")


def proof_key(secret_key: str) -> bytes:
    return hmac.new(secret_key.encode(), b"seams: the gateway's proof", hashlib.sha256).digest()


@dataclass(frozen=True)
class Proven:
    caller: Caller | None
    client_host: str | None


@dataclass(frozen=True)
class _Checked:
    """A proof whose signature and claims were checked once: what it proves, and for what."""

    proven: Proven
    method: str
    path: str
    expires: int


_Request = tuple[str | None, str | None, str, str, str | None]  # caller, role, method, path, client


class GatewayProof:
    def __init__(
        self,
        secret_key: str,
        *,
        lifetime_seconds: int = LIFETIME_SECONDS,
        cache_size: int = CACHE_SIZE,
    ) -> None:
        self._key = proof_key(secret_key)
        self._lifetime = lifetime_seconds
        # What was signed for a request, reused for half its life; what was checked, until
        # the proof expires (docs/decisions/0037-request-path-cost.md).
        self._issued: Expiring[_Request, str] = Expiring(cache_size)
        self._checked: Expiring[str, _Checked] = Expiring(cache_size)

    def issue(
        self, *, caller: Caller | None, method: str, path: str, client_host: str | None
    ) -> str:
        request: _Request = (
            caller.id if caller else None,
            caller.role if caller else None,
            method,
            path,
            client_host,
        )
        token = self._issued.get(request)
        if token is None:
            token = self._sign(caller=caller, method=method, path=path, client_host=client_host)
            self._issued.put(request, token, time.time() + self._lifetime / 2)
        return token

    def _sign(
        self, *, caller: Caller | None, method: str, path: str, client_host: str | None
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + self._lifetime,
            "mth": method,
            "pth": path,
        }
        if caller is not None:
            claims["sub"] = caller.id
            claims["role"] = caller.role
        if client_host is not None:
            claims["cip"] = client_host
        return jwt.encode(claims, self._key, algorithm=ALGORITHM)

    def verify(self, token: str, *, method: str, path: str) -> Proven:
        checked = self._checked.get(token)
        if checked is None:
            checked = self._check(token)
            self._checked.put(token, checked, checked.expires)
        if checked.method != method or checked.path != path:
            raise NotAuthorizedException("the gateway's proof is for another request")
        return checked.proven

    def _check(self, token: str) -> _Checked:
        """The signature and every claim, by PyJWT; NotAuthorizedException if any is wrong."""
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                options={"require": ["exp", "iat", "aud", "mth", "pth"]},
            )
        except jwt.PyJWTError as error:
            raise NotAuthorizedException(f"the gateway's proof is not valid: {error}") from None
        caller = None
        if "sub" in claims:
            role = claims.get("role")
            if role not in ("user", "admin"):
                raise NotAuthorizedException("the gateway's proof names an unknown role")
            caller = Caller(id=str(claims["sub"]), role=role)
        client = claims.get("cip")
        return _Checked(
            Proven(caller, client if isinstance(client, str) else None),
            method=str(claims["mth"]),
            path=str(claims["pth"]),
            expires=int(claims["exp"]),
        )


def _open(path: str) -> bool:
    """Answered without a proof: the probes, the scrape and the API docs."""
    return path in OPEN_PATHS or path.startswith("/schema")


class GatewayProofMiddleware(ASGIMiddleware):
    """In a module process: every request but the probes must come through the gateway.
    The caller the proof names becomes request.user; a route that is not public needs one."""

    def __init__(self, proof: GatewayProof) -> None:
        self._proof = proof

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        if scope["type"] != ScopeType.HTTP or _open(scope["path"]):
            await next_app(scope, receive, send)
            return
        token = first_header(scope, HEADER.encode())
        if token is None:
            raise NotAuthorizedException(
                "this is a module process: send requests through the gateway"
            )
        proven = self._proof.verify(token, method=str(scope.get("method")), path=scope["path"])
        scope["user"] = proven.caller
        scope["auth"] = token
        if proven.client_host is not None:
            scope["client"] = (proven.client_host, 0)
        route_handler = scope.get("route_handler")
        public = route_handler is not None and route_handler.opt.get("public", False)
        if proven.caller is None and not public:
            raise NotAuthorizedException("this route needs a bearer token")
        await next_app(scope, receive, send)
