"""Idempotency keys with Stripe's semantics, for POSTs that create things
(docs/decisions/0011-idempotency-keys.md).

The first response to a key is stored by the owning module in the same atomic write as
the effect, and replayed for the same key; the same key with a different body is a 422;
a request whose key is still in progress is a 409 to retry. Only requests that executed
store a response: transient refusals (409, 429, 503) and invalid input never do.

The fingerprint stored beside a response is an HMAC of the request's digest under a key
derived from the secret key: a registration body holds a password, and a bare hash of it
would give the password away to a few guesses by anyone who reads the store.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, TypeVar

import msgspec
from litestar import Response
from litestar.params import HeaderParameter

from app.kernel.errors import Conflict, DomainError, TryAgain
from app.kernel.ids import utcnow

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255

IdempotencyKeyHeader = Annotated[
    str | None,
    HeaderParameter(
        name=HEADER,
        min_length=1,
        max_length=MAX_KEY_LENGTH,
        description=(
            "Makes the request safe to retry: the first response is stored and replayed for "
            "the same key (24 h); the same key with another body is a 422; a key still in "
            "progress is a 409 to retry."
        ),
    ),
]

T = TypeVar("T")


class KeyReused(DomainError):
    status = 422
    title = "Idempotency-Key reused"


@dataclass(frozen=True)
class StoredResponse:
    fingerprint: str
    status: int
    body: bytes
    expires_at: datetime

    @property
    def expired(self) -> bool:
        return self.expires_at <= utcnow()


@dataclass(frozen=True)
class IdempotentWrite:
    """What a module writes beside its effect so that the response can be replayed."""

    scope: str
    key: str
    fingerprint: str
    expires_at: datetime
    status: int
    render: Callable[[Any], bytes]  # the response body for what was created
    request_digest: str  # the bare digest: kept in memory, never stored

    def response_for(self, created: Any) -> StoredResponse:
        return StoredResponse(self.fingerprint, self.status, self.render(created), self.expires_at)


class KeyTaken(Exception):
    """Raised by a store when another request wrote the same key first."""


FINGERPRINT_KEY_LABEL = b"seams: idempotency fingerprints"


def fingerprint_key(secret_key: str) -> bytes:
    """The key fingerprints are made with: derived from the secret key, so it is never the
    key that signs tokens, and a store's reader cannot make it without the secret."""
    return hmac.new(secret_key.encode(), FINGERPRINT_KEY_LABEL, hashlib.sha256).digest()


def fingerprint(*parts: bytes | str) -> str:
    """The request's digest (route, body). `Idempotency` stores it keyed, never as is."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\x1f")
    return digest.hexdigest()


class Idempotency:
    """Runs a request at most once per (scope, key) and answers repeats from the store."""

    def __init__(self, ttl_seconds: float, fingerprint_key: bytes) -> None:
        self._ttl = timedelta(seconds=ttl_seconds)
        self._fingerprint_key = fingerprint_key
        self._in_flight: set[tuple[str, str]] = set()

    def write(
        self, scope: str, key: str, fingerprint: str, status: int, render: Callable[[Any], bytes]
    ) -> IdempotentWrite:
        keyed = hmac.new(self._fingerprint_key, fingerprint.encode(), hashlib.sha256).hexdigest()
        expires_at = utcnow() + self._ttl
        return IdempotentWrite(scope, key, keyed, expires_at, status, render, fingerprint)

    async def run(
        self,
        write: IdempotentWrite,
        find: Callable[[], Awaitable[StoredResponse | None]],
        execute: Callable[[], Awaitable[bytes]],
    ) -> tuple[StoredResponse, bool]:
        """(the response, whether it is a replay)."""
        stored = await find()
        if stored is not None and not stored.expired:
            return _same_request(stored, write), True
        claim = (write.scope, write.key)
        if claim in self._in_flight:
            raise TryAgain(
                f"a request with this {HEADER} is still in progress; retry after Retry-After"
            )
        self._in_flight.add(claim)
        try:
            body = await execute()
        except KeyTaken:  # another process wrote it first: answer as it did
            stored = await find()
            if stored is None:
                raise Conflict(f"this {HEADER} was just used; retry") from None
            return _same_request(stored, write), True
        finally:
            self._in_flight.discard(claim)
        return StoredResponse(write.fingerprint, write.status, body, write.expires_at), False


def _same_request(stored: StoredResponse, write: IdempotentWrite) -> StoredResponse:
    if hmac.compare_digest(stored.fingerprint, write.fingerprint):
        return stored
    # Stored before fingerprints were keyed: the bare digest still matches the same request
    # until the row expires (the TTL) and is purged with the other expired keys.
    if hmac.compare_digest(stored.fingerprint, write.request_digest):
        return stored
    raise KeyReused(
        f"this {HEADER} was used with a different request body; use a new key for a new request"
    )


def replay_response(stored: StoredResponse, replayed: bool, schema: type[T]) -> Response[T]:
    """The stored response, decoded into its schema so the API documents one shape."""
    headers = {"Idempotent-Replayed": "true"} if replayed else {}
    body = msgspec.json.decode(stored.body, type=schema)
    return Response(body, status_code=stored.status, headers=headers)
