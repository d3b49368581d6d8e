"""Nothing on disk gives a password away: idempotency fingerprints are keyed by the secret,
the data dir is 0700 and every file in it 0600."""

from __future__ import annotations

import hashlib
import sqlite3
import stat
from pathlib import Path

import anyio
import httpx
import msgspec
import pytest

from tests.support.seams import fast_settings, running
from tests.support.server import served_alone

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


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.slow  # starts a real server
async def test_python_m_app_makes_its_data_dir_0700_and_every_file_in_it_0600(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "var"  # fresh: the server creates it, under the usual umask 022
    with anyio.fail_after(60):
        async with served_alone(data_dir, tmp_path / "server.log") as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as client:
                response = await client.post(
                    "/api/users", json=SIGNUP, headers={"Idempotency-Key": "signup"}
                )
            assert response.status_code == 201, response.text
            # While it runs: the WAL side files exist only then.
            modes = {str(path.relative_to(data_dir)): mode(path) for path in data_dir.rglob("*")}

    assert mode(data_dir) == 0o700
    assert {"users.db", "users.db-wal", "users.db-shm", "bus.db", "secret_key"} <= set(modes)
    assert {name: oct(m) for name, m in modes.items() if m != 0o600} == {}
