"""Idempotency fingerprints are keyed: what is stored beside a response cannot be
recomputed from a guessed body (a registration body holds a password) without the key."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest

from app.kernel.idempotency import (
    Idempotency,
    KeyReused,
    StoredResponse,
    fingerprint,
    fingerprint_key,
)
from app.kernel.ids import utcnow

pytestmark = pytest.mark.anyio

KEY = fingerprint_key("a secret of at least thirty-two characters")
BODY = b'{"name":"Mo","email":"mo@example.com","password":"hunter2 hunter2"}'


def bare_sha256(*parts: bytes) -> str:
    """What an attacker reading the store computes for each guessed password."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part + b"\x1f")
    return digest.hexdigest()


def stored_fingerprint(idempotency: Idempotency, body: bytes) -> str:
    write = idempotency.write(
        "POST /api/users", "k", fingerprint("POST /api/users", body), 201, bytes
    )
    return write.response_for(b"{}").fingerprint


def test_the_stored_fingerprint_is_not_a_bare_hash_of_the_request() -> None:
    stored = stored_fingerprint(Idempotency(60, KEY), BODY)

    assert stored != bare_sha256(b"POST /api/users", BODY)
    assert stored != hashlib.sha256(BODY).hexdigest()


def test_the_stored_fingerprint_depends_on_the_key_and_is_stable_under_it() -> None:
    other_key = fingerprint_key("another secret of at least thirty-two characters")

    assert stored_fingerprint(Idempotency(60, KEY), BODY) == stored_fingerprint(
        Idempotency(60, KEY), BODY
    )
    assert stored_fingerprint(Idempotency(60, KEY), BODY) != stored_fingerprint(
        Idempotency(60, other_key), BODY
    )


def test_the_fingerprint_key_is_not_the_secret_itself() -> None:
    secret = "a secret of at least thirty-two characters"

    assert fingerprint_key(secret) != secret.encode()
    assert len(fingerprint_key(secret)) == 32


async def test_a_keyed_fingerprint_replays_the_same_body_and_refuses_another() -> None:
    idempotency = Idempotency(60, KEY)
    first = idempotency.write("s", "k", fingerprint("r", BODY), 201, bytes)
    stored = first.response_for(b"created")
    executed: list[bytes] = []

    async def find() -> StoredResponse:
        return stored

    async def execute() -> bytes:
        executed.append(b"again")
        return b"created again"

    same = idempotency.write("s", "k", fingerprint("r", BODY), 201, bytes)
    replay, replayed = await idempotency.run(same, find, execute)
    other = idempotency.write("s", "k", fingerprint("r", BODY + b" "), 201, bytes)
    with pytest.raises(KeyReused):
        await idempotency.run(other, find, execute)

    assert (replay.body, replayed, executed) == (b"created", True, [])


async def test_a_response_stored_before_fingerprints_were_keyed_still_replays() -> None:
    # Rows written by an earlier version hold the bare digest; they expire within the TTL.
    idempotency = Idempotency(60, KEY)
    legacy = StoredResponse(
        bare_sha256(b"r", BODY), 201, b"created", utcnow() + timedelta(seconds=60)
    )

    async def find() -> StoredResponse:
        return legacy

    async def execute() -> bytes:
        raise AssertionError("a replay must not execute the request again")

    same = idempotency.write("s", "k", fingerprint("r", BODY), 201, bytes)
    replay, replayed = await idempotency.run(same, find, execute)
    other = idempotency.write("s", "k", fingerprint("r", b"{}"), 201, bytes)
    with pytest.raises(KeyReused):
        await idempotency.run(other, find, execute)

    assert (replay.body, replayed) == (b"created", True)
