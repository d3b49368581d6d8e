"""The gateway's proof: what a module process accepts, and everything it refuses."""

from __future__ import annotations

import datetime as dt
import time

import jwt
import pytest
from litestar.exceptions import NotAuthorizedException

from app.kernel.identity import Caller
from app.split.proof import ALGORITHM, AUDIENCE, GatewayProof, proof_key

SECRET = "a-secret-key-of-enough-length-for-hs256-0123456789"
ALICE = Caller(id="user-1", role="user")


def test_a_proof_names_the_caller_and_the_client_for_its_request() -> None:
    proof = GatewayProof(SECRET)
    token = proof.issue(caller=ALICE, method="GET", path="/api/orders", client_host="10.0.0.7")

    proven = proof.verify(token, method="GET", path="/api/orders")

    assert (proven.caller, proven.client_host) == (ALICE, "10.0.0.7")


def test_an_anonymous_proof_names_no_caller() -> None:
    proof = GatewayProof(SECRET)
    token = proof.issue(caller=None, method="POST", path="/api/users", client_host=None)

    assert proof.verify(token, method="POST", path="/api/users").caller is None


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/api/orders"), ("GET", "/api/orders/other"), ("GET", "/api/payments")],
)
def test_a_proof_for_another_request_is_refused(method: str, path: str) -> None:
    proof = GatewayProof(SECRET)
    token = proof.issue(caller=ALICE, method="GET", path="/api/orders", client_host=None)

    with pytest.raises(NotAuthorizedException, match="another request"):
        proof.verify(token, method=method, path=path)


def test_a_proof_signed_with_another_secret_is_refused() -> None:
    token = GatewayProof("another-secret-key-0123456789-0123456789-0123").issue(
        caller=ALICE, method="GET", path="/api/orders", client_host=None
    )
    with pytest.raises(NotAuthorizedException, match="not valid"):
        GatewayProof(SECRET).verify(token, method="GET", path="/api/orders")


def test_a_user_token_signed_with_the_secret_itself_is_not_a_proof() -> None:
    # User tokens are signed with APP_SECRET_KEY; proofs with a key derived from it.
    claims = {"aud": AUDIENCE, "iat": int(time.time()), "exp": int(time.time()) + 60}
    user_token = jwt.encode(
        {**claims, "sub": "user-1", "mth": "GET", "pth": "/api/orders"}, SECRET, ALGORITHM
    )
    with pytest.raises(NotAuthorizedException, match="not valid"):
        GatewayProof(SECRET).verify(user_token, method="GET", path="/api/orders")


def test_an_expired_proof_is_refused() -> None:
    now = int(time.time())
    token = jwt.encode(
        {"aud": AUDIENCE, "iat": now - 120, "exp": now - 60, "mth": "GET", "pth": "/api/x"},
        proof_key(SECRET),
        ALGORITHM,
    )
    with pytest.raises(NotAuthorizedException, match="expired"):
        GatewayProof(SECRET).verify(token, method="GET", path="/api/x")


def test_a_proof_with_an_unknown_role_is_refused() -> None:
    now = int(time.time())
    token = jwt.encode(
        {
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + 30,
            "mth": "GET",
            "pth": "/api/x",
            "sub": "u",
            "role": "root",
        },
        proof_key(SECRET),
        ALGORITHM,
    )
    with pytest.raises(NotAuthorizedException, match="unknown role"):
        GatewayProof(SECRET).verify(token, method="GET", path="/api/x")


def test_an_unsigned_proof_is_refused() -> None:
    now = int(time.time())
    token = jwt.encode(
        {"aud": AUDIENCE, "iat": now, "exp": now + 30, "mth": "GET", "pth": "/api/x"},
        None,
        "none",
    )
    with pytest.raises(NotAuthorizedException, match="not valid"):
        GatewayProof(SECRET).verify(token, method="GET", path="/api/x")


class _FrozenDatetime:
    """PyJWT's clock (`datetime.now`) at a chosen instant."""

    def __init__(self, at: float) -> None:
        self._at = at

    def now(self, tz: dt.tzinfo | None = None) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._at, tz=tz)


def test_the_gateway_signs_once_per_caller_and_request_while_half_a_life_is_left(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [float(int(time.time()))]
    monkeypatch.setattr("app.split.proof.time.time", lambda: now[0])
    proof = GatewayProof(SECRET, lifetime_seconds=30)

    def issue(caller: Caller | None = ALICE, path: str = "/api/orders") -> str:
        return proof.issue(caller=caller, method="GET", path=path, client_host="10.0.0.7")

    first = issue()
    now[0] += 14
    assert issue() == first  # the same request: the same proof, not signed again
    assert issue(path="/api/orders/1") != first
    assert issue(caller=Caller(id="user-1", role="admin")) != first
    assert issue(caller=None) != first
    now[0] += 2  # 16 s old: a module may get it with less than half its life left
    renewed = issue()
    assert renewed != first
    monkeypatch.setattr("jwt.api_jwt.datetime", _FrozenDatetime(now[0]))
    assert proof.verify(renewed, method="GET", path="/api/orders").caller == ALICE


def test_a_proof_checked_before_is_refused_once_it_has_expired(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [float(int(time.time()))]
    monkeypatch.setattr("app.split.proof.time.time", lambda: now[0])
    proof = GatewayProof(SECRET, lifetime_seconds=30)
    token = proof.issue(caller=ALICE, method="GET", path="/api/orders", client_host=None)
    assert proof.verify(token, method="GET", path="/api/orders").caller == ALICE

    now[0] += 30
    monkeypatch.setattr("jwt.api_jwt.datetime", _FrozenDatetime(now[0]))
    with pytest.raises(NotAuthorizedException, match="expired"):
        proof.verify(token, method="GET", path="/api/orders")


def test_a_proof_checked_before_is_still_refused_for_another_request() -> None:
    proof = GatewayProof(SECRET)
    token = proof.issue(caller=ALICE, method="GET", path="/api/orders", client_host=None)
    assert proof.verify(token, method="GET", path="/api/orders").caller == ALICE

    for method, path in [("POST", "/api/orders"), ("GET", "/api/orders/1")]:
        with pytest.raises(NotAuthorizedException, match="another request"):
            proof.verify(token, method=method, path=path)


def test_the_proofs_kept_are_bounded_and_a_forgotten_one_is_checked_again() -> None:
    gateway, module = GatewayProof(SECRET, cache_size=3), GatewayProof(SECRET, cache_size=3)
    paths = [f"/api/orders/{n}" for n in range(10)]
    tokens = [gateway.issue(caller=ALICE, method="GET", path=p, client_host=None) for p in paths]
    for token, path in zip(tokens, paths, strict=True):
        assert module.verify(token, method="GET", path=path).caller == ALICE
    assert (len(gateway._issued), len(module._checked)) == (3, 3)
    assert module.verify(tokens[0], method="GET", path=paths[0]).caller == ALICE
    forged = tokens[1][:-2] + ("AA" if not tokens[1].endswith("AA") else "BB")
    with pytest.raises(NotAuthorizedException, match="not valid"):
        module.verify(forged, method="GET", path=paths[1])
