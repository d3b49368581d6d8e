"""Opening sealed personal data across the processes of the split mode, over NATS
request-reply (docs/decisions/0030-crypto-shredding.md).

A process of the module owning the keys (the one whose Assembly offers a keyring) answers
`seams.keyring.open` (a subject and a sealed value in; what it seals out, or null once the
subject's key is erased; one replica answers each request). Every other module process binds
its PersonalData to the asker here, so a consumer opens what it needs without a copy of any
key and without reading the store that holds them. When no process of that module answers,
opening is a "not yet" (docs/decisions/0032): the event waits for a process of that module without
spending its attempts, then, past the wait, fails and is dead-lettered, to be replayed.
"""

from __future__ import annotations

import logging
import os

import msgspec
import nats.errors
from nats.aio.msg import Msg

from app.bus import NotYet
from app.kernel.sealing import Keyring, NoKeyring, SealBroken
from app.split.nats import BrokerConnection

log = logging.getLogger("app.split.keyring")

OPEN = "seams.keyring.open"
ANSWERERS = "seams-keyring"  # the queue group: one process answers each question
ASK_SECONDS = 2.0


class KeyringAway(NoKeyring, NotYet):
    """No process of the module owning the keys answered (yet): one starting, or restarting."""


class Sealed(msgspec.Struct, frozen=True):
    subject: str
    sealed: str


class Opened(msgspec.Struct, frozen=True):
    plaintext: bytes | None = None  # None: the subject's key is erased
    broken: str | None = None  # why the value does not open (SealBroken)


class KeyringAnswerer:
    """In the process of the module owning the keys: opens what other processes ask."""

    def __init__(self, nats_url: str, keyring: Keyring) -> None:
        self._keyring = keyring
        self._broker = BrokerConnection(nats_url, f"seams-keyring-{os.getpid()}")

    async def start(self) -> None:
        connection = await self._broker.open()
        await connection.subscribe(OPEN, queue=ANSWERERS, cb=self._answer)

    async def _answer(self, message: Msg) -> None:
        try:
            asked = msgspec.json.decode(message.data, type=Sealed)
            opened = Opened(plaintext=await self._keyring.open(asked.subject, asked.sealed))
        except (msgspec.ValidationError, SealBroken) as error:
            opened = Opened(broken=str(error))
        await message.respond(msgspec.json.encode(opened))

    async def stop(self) -> None:
        await self._broker.close(drain=True)


class KeyringOverNats:
    """In a process without the module owning the keys: a Keyring that asks one that has."""

    def __init__(self, nats_url: str, *, ask_seconds: float = ASK_SECONDS) -> None:
        self._ask_seconds = ask_seconds
        self._broker = BrokerConnection(nats_url, f"seams-keyring-asker-{os.getpid()}")

    async def start(self) -> None:
        await self._broker.open()

    async def open(self, subject: str, sealed: str) -> bytes | None:
        connection = self._broker.client
        if connection is None:
            raise KeyringAway("not connected to the broker yet to ask for the keyring")
        question = msgspec.json.encode(Sealed(subject, sealed))
        try:
            answer = await connection.request(OPEN, question, timeout=self._ask_seconds)
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError) as error:
            raise KeyringAway(
                "no process of the module owning personal data keys answered: start one; "
                "the event waits for it"
            ) from error
        opened = msgspec.json.decode(answer.data, type=Opened)
        if opened.broken is not None:
            raise SealBroken(opened.broken)
        return opened.plaintext

    async def stop(self) -> None:
        await self._broker.close()
