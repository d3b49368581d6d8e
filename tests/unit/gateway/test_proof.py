"""The gateway's proof: what a module process accepts, and everything it refuses."""

from __future__ import annotations

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
