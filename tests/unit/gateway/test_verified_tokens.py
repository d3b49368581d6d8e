"""The gateway verifies a bearer token in full once, then remembers it until its expiry: what
it remembers, for how long, and everything it never lets in."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, cast

import jwt
import pytest
from litestar import Litestar, Request, get
from litestar.security.jwt import Token
from litestar.testing import TestClient

from app.gateway.auth import (
    GatewayJWTAuth,
    JwtIssuer,
    Verified,
    VerifiedTokens,
    identity_middleware,
    jwt_auth,
    protected,
)
from app.gateway.errors import EXCEPTION_HANDLERS
from app.kernel.identity import Caller
from app.kernel.settings import Settings

SECRET = "a-secret-key-of-enough-length-for-hs256-0123456789"
ADA = Caller(id="user-ada", role="user")


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@get("/api/me", sync_to_thread=False)
def me(request: Request[Caller, Any, Any]) -> dict[str, str]:
    return {"id": request.user.id, "role": request.user.role}


@get("/api/open", opt={"public": True}, sync_to_thread=False)
def open_route(request: Request[Any, Any, Any]) -> dict[str, bool]:
    return {"authenticated": request.scope.get("user") is not None}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def auth(clock: Clock) -> GatewayJWTAuth:
    auth = jwt_auth(Settings.from_env({}), SECRET)
    auth.verified_tokens = VerifiedTokens(size=8, clock=clock)
    return auth


@pytest.fixture
def client(auth: GatewayJWTAuth) -> Iterator[TestClient[Litestar]]:
    app = Litestar(
        [me, open_route],
        on_app_init=[auth.on_app_init],
        middleware=identity_middleware(Settings.from_env({}), auth, None, protected(auth)),
        exception_handlers=EXCEPTION_HANDLERS,
    )
    with TestClient(app) as client:
        yield client


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every token PyJWT is asked to verify."""
    seen: list[str] = []
    decode = Token.decode.__func__  # type: ignore[attr-defined]

    def counting(cls: type[Token], encoded_token: str, *args: Any, **kwargs: Any) -> Token:
        seen.append(encoded_token)
        return cast(Token, decode(cls, encoded_token, *args, **kwargs))

    monkeypatch.setattr(Token, "decode", classmethod(counting))
    return seen


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_token_is_verified_once_then_remembered(
    client: TestClient[Litestar], auth: GatewayJWTAuth, verifications: list[str]
) -> None:
    token = JwtIssuer(auth).issue(ADA, generation=1).access_token

    answers = [client.get("/api/me", headers=bearer(token)) for _ in range(3)]

    assert [answer.status_code for answer in answers] == [200, 200, 200]
    assert {answer.json()["id"] for answer in answers} == {ADA.id}
    assert verifications == [token]
    assert len(auth.verified_tokens) == 1


def test_a_remembered_token_is_verified_again_once_its_expiry_has_passed(
    client: TestClient[Litestar],
    auth: GatewayJWTAuth,
    clock: Clock,
    verifications: list[str],
) -> None:
    token = JwtIssuer(auth).issue(ADA, generation=1).access_token
    assert client.get("/api/me", headers=bearer(token)).status_code == 200

    clock.now += timedelta(minutes=61).total_seconds()  # past the token's 60 minutes
    client.get("/api/me", headers=bearer(token))

    assert verifications == [token, token]  # PyJWT decides again (here, on the real clock)


def test_an_expired_token_is_refused_and_never_remembered(
    client: TestClient[Litestar], auth: GatewayJWTAuth
) -> None:
    now = int(time.time())
    expired = jwt.encode(
        {"sub": ADA.id, "iat": now - 120, "exp": now - 60, "extras": {"role": "user"}},
        SECRET,
        algorithm="HS256",
    )

    answers = [client.get("/api/me", headers=bearer(expired)).status_code for _ in range(2)]

    assert answers == [401, 401]
    assert len(auth.verified_tokens) == 0


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda claims: jwt.encode(claims, "another secret", "HS256"), id="signature"),
        pytest.param(lambda claims: jwt.encode(claims, SECRET, "HS512"), id="HS512"),
        pytest.param(lambda claims: jwt.encode(claims, None, "none"), id="alg none"),
        pytest.param(
            lambda claims: jwt.encode({**claims, "extras": {"role": "root"}}, SECRET, "HS256"),
            id="unknown role",
        ),
    ],
)
def test_a_forged_token_is_refused_every_time_and_never_remembered(
    client: TestClient[Litestar], auth: GatewayJWTAuth, forge: Any
) -> None:
    now = int(time.time())
    claims = {"sub": ADA.id, "iat": now, "exp": now + 600, "extras": {"role": "user"}}
    forged = forge(claims)

    answers = [client.get("/api/me", headers=bearer(forged)).status_code for _ in range(2)]

    assert answers == [401, 401]
    assert len(auth.verified_tokens) == 0


def test_a_remembered_token_answers_for_its_own_caller_only(
    client: TestClient[Litestar], auth: GatewayJWTAuth
) -> None:
    issuer = JwtIssuer(auth)
    ada = issuer.issue(ADA, generation=1).access_token
    root = issuer.issue(Caller(id="user-root", role="admin"), generation=1).access_token
    client.get("/api/me", headers=bearer(ada))

    answer = client.get("/api/me", headers=bearer(root))

    assert answer.json() == {"id": "user-root", "role": "admin"}
    assert client.get("/api/me", headers=bearer(ada)).json() == {"id": ADA.id, "role": "user"}


def test_public_routes_stay_unauthenticated_even_with_a_remembered_token(
    client: TestClient[Litestar], auth: GatewayJWTAuth
) -> None:
    token = JwtIssuer(auth).issue(ADA, generation=1).access_token
    client.get("/api/me", headers=bearer(token))

    assert client.get("/api/open", headers=bearer(token)).json() == {"authenticated": False}
    assert client.get("/api/me").status_code == 401  # no token: no memory helps


def test_the_memory_is_bounded_and_forgets_the_oldest_first() -> None:
    tokens = VerifiedTokens(size=2)
    result = Verified(ADA.id, 1, ADA.role)
    later = time.time() + 600

    for token in ("first", "second", "third"):
        tokens.put(token, result, later)

    assert len(tokens) == 2
    assert tokens.get("first") is None
    assert tokens.get("second") is result and tokens.get("third") is result
