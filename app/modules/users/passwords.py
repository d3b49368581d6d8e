"""Password hashing with argon2id (argon2-cffi). Hashing is slow on purpose, so it runs in a
worker thread, off the event loop."""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError


def make_hasher(profile: str) -> PasswordHasher:
    if profile == "argon2id-fast":  # tests only: same algorithm, cheap parameters
        return PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    return PasswordHasher()  # argon2id with the RFC 9106 low-memory recommended parameters


class Passwords:
    def __init__(self, hasher: PasswordHasher) -> None:
        self._hasher = hasher

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str, password: str) -> bool:
        try:
            return await asyncio.to_thread(self._hasher.verify, password_hash, password)
        except (VerificationError, InvalidHashError):
            return False
