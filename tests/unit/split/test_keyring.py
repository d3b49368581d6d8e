"""Sealed personal data opened across processes over NATS (app/split/keyring.py;
docs/decisions/0030-crypto-shredding.md): a process without the keys gets what a process of
their owner opens, None once a key is erased, SealBroken for a value that does not open, and
a "not yet" while no owner answers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.bus import NotYet
from app.kernel.sealing import SealBroken, new_key, open_sealed, seal
from app.split.keyring import KeyringAnswerer, KeyringAway, KeyringOverNats
from tests.support.nats import nats_server

pytestmark = [pytest.mark.anyio, pytest.mark.services]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Keys:
    """A keyring of two subjects, the way the users module's answers."""

    def __init__(self) -> None:
        self.keys = {"ada": new_key(), "bob": new_key()}

    async def open(self, subject: str, sealed: str) -> bytes | None:
        key = self.keys.get(subject)
        return None if key is None else open_sealed(key, sealed, subject=subject)


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[str]:
    with nats_server(tmp_path / "nats") as server:
        yield server.url


async def test_a_process_without_the_keys_opens_through_one_that_has_them(broker: str) -> None:
    keys = Keys()
    answerer, asker = KeyringAnswerer(broker, keys), KeyringOverNats(broker)
    await answerer.start()
    await asker.start()
    try:
        sealed = seal(keys.keys["ada"], b'{"name":"Ada"}', subject="ada")
        assert await asker.open("ada", sealed) == b'{"name":"Ada"}'
        with pytest.raises(SealBroken):
            await asker.open("bob", sealed)  # sealed for another subject
        del keys.keys["ada"]  # erased
        assert await asker.open("ada", sealed) is None
    finally:
        await asker.stop()
        await answerer.stop()


async def test_while_no_owner_of_the_keys_answers_opening_is_a_not_yet(broker: str) -> None:
    asker = KeyringOverNats(broker, ask_seconds=0.5)
    await asker.start()
    try:
        with pytest.raises(KeyringAway) as away:
            await asker.open("ada", seal(new_key(), b"x", subject="ada"))
        assert isinstance(away.value, NotYet)  # the bus waits, spending no attempt
    finally:
        await asker.stop()
