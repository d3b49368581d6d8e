"""Nothing on disk gives a password away: idempotency fingerprints are keyed by the secret,
the data dir is 0700 and every file in it 0600."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import msgspec
import pytest

from tests.support.seams import fast_settings, running

pytestmark = pytest.mark.anyio

SIGNUP = {"name": "Mo", "email": "mo@example.com", "password": "hunter2 hunter2"}


def idempotency_fingerprints(users_db: Path) -> list[str]:
    with sqlite3.connect(f"file:{users_db}?mode=ro", uri=True) as db:
        return [row[0] for row in db.execute("SELECT fingerprint FROM idempotency_keys")]


async def register_with_a_key(data_dir: Path, secret_key: str) -> str:
    settings = fast_settings(data_dir=str(data_dir), secret_key=secret_key)
    async with running(settings) as seams:
        response = await seams.client.post(
            "/api/users", json=SIGNUP, headers={"Idempotency-Key": "signup"}
        )
        assert response.status_code == 201, response.text
    (stored,) = idempotency_fingerprints(data_dir / "users.db")
    return stored


async def test_a_registration_fingerprint_cannot_be_recomputed_from_a_guessed_password(
    tmp_path: Path,
) -> None:
    stored = await register_with_a_key(tmp_path / "a", "the first secret, thirty-two chars+")
    under_another_secret = await register_with_a_key(
        tmp_path / "b", "the second secret, thirty-two chars"
    )

    # What an attacker reading users.db would try for each guessed password.
    body = msgspec.json.encode(SIGNUP)
    guesses = {
        hashlib.sha256(b"POST /api/users\x1f" + body + b"\x1f").hexdigest(),
        hashlib.sha256(body).hexdigest(),
    }
    assert stored not in guesses
    assert stored != under_another_secret  # the secret is part of it
