"""Personal data sealed per person (crypto-shredding, docs/decisions/0030-crypto-shredding.md).

What is personal in an event travels sealed with a key of its subject's own (AES-256-GCM,
the subject's id bound in as associated data, so a sealed value moved onto another person
does not open). The module owning the keys keeps them; deleting a key leaves every copy of
what it sealed unreadable: outbox rows, inboxes, dead letters, parked events, the broker's
stream and any backup of them.

Every module is handed one `PersonalData`: it opens what was sealed by asking the owner of
the keys, bound at start (in process in the monolith, over NATS in split mode), so no module
reads the keys' store but their owner.
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # GCM's standard nonce: random per sealing, 2^-32 collision bound per key
PREFIX = "aesgcm1:"  # what sealed the value: a later scheme gets its own prefix


class SealBroken(ValueError):
    """A sealed value that is not one, was changed, or belongs to another subject."""


def new_key() -> bytes:
    return AESGCM.generate_key(bit_length=KEY_BYTES * 8)


def seal(key: bytes, plaintext: bytes, *, subject: str) -> str:
    """`plaintext` readable only with `key`, and only as `subject`'s."""
    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, plaintext, subject.encode())
    return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()


def open_sealed(key: bytes, sealed: str, *, subject: str) -> bytes:
    """What `seal` sealed for `subject` with `key`; SealBroken otherwise."""
    if not sealed.startswith(PREFIX):
        raise SealBroken(f"not a value sealed by {PREFIX.rstrip(':')}")
    try:
        raw = base64.urlsafe_b64decode(sealed[len(PREFIX) :])
        return AESGCM(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], subject.encode())
    except (binascii.Error, InvalidTag, ValueError) as error:
        raise SealBroken(f"the sealed value does not open as {subject!r}'s") from error


class Keyring(Protocol):
    """Offered by the module owning the keys: opens a value sealed for a subject."""

    async def open(self, subject: str, sealed: str) -> bytes | None:
        """None: the subject's key is gone (erased), so the value is gone too."""
        ...


class NoKeyring(RuntimeError):
    """Nothing here can open sealed values: no module owning the keys runs, and no way to
    one was bound (a handler raising it is retried by the bus, then dead-lettered)."""


class PersonalData:
    """What every module is handed to open personal data sealed in events; the composition
    root binds it to the keys' owner once every module is assembled."""

    def __init__(self) -> None:
        self._keyring: Keyring | None = None

    def bind(self, keyring: Keyring) -> None:
        self._keyring = keyring

    @property
    def bound(self) -> bool:
        return self._keyring is not None

    async def open(self, subject: str, sealed: str) -> bytes | None:
        if self._keyring is None:
            raise NoKeyring(
                "no module owning personal data keys runs in this process and none was "
                "reached: start it, then replay"
            )
        return await self._keyring.open(subject, sealed)
