"""Deleting a user in split mode (issue 17, point 3; docs/decisions/0030-crypto-shredding.md):
notifications opens the sealed details over NATS (the users process holds the keys), and no
message of the broker's stream, read raw, holds the user's name or email, before or after
the deletion, nor, once stopped, any file (SQLite stores, process logs, the broker's JetStream
store); the user's tokens are refused through the split gateway."""

from __future__ import annotations

from pathlib import Path

import nats
import pytest

from app.split.nats_transport import NatsTransport
from tests.e2e.test_delete_user import a_paid_order, files_holding, memorable_person, register_as
from tests.support.split import split_system

pytestmark = [pytest.mark.anyio, pytest.mark.services, pytest.mark.split, pytest.mark.slow]

STREAM = NatsTransport.__init__.__kwdefaults__["stream"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def stream_messages(url: str) -> list[bytes]:
    """Every message the stream keeps, raw: its subject, headers and payload bytes."""
    client = await nats.connect(url, connect_timeout=2)
    try:
        js = client.jetstream(timeout=5)
        state = (await js.stream_info(STREAM)).state
        raw = []
        for sequence in range(state.first_seq, state.last_seq + 1):
            message = await js.get_msg(STREAM, sequence)
            headers = b"".join(f"{k}:{v}".encode() for k, v in (message.headers or {}).items())
            raw.append(message.subject.encode() + headers + (message.data or b""))
        return raw
    finally:
        await client.close()


async def test_no_message_of_the_stream_holds_a_deleted_users_name_or_email(
    tmp_path: Path,
) -> None:
    name, email = memorable_person()
    async with split_system(tmp_path) as split:
        user = await register_as(split, name, email)
        await a_paid_order(split, user)  # notifications opened the sealed details over NATS

        deleted = await split.client.delete(f"/api/users/{user['id']}")
        await split.settle()

        assert deleted.status_code == 204, deleted.text
        refused = await split.client.get(f"/api/users/{user['id']}", headers=user["headers"])
        assert refused.status_code == 401
        [notice] = await split.all_pages("/api/notifications", user_id=user["id"])
        assert (notice["to"], notice["body"]) == ("[erased]", "[erased]")
        messages = await stream_messages(split.nats.url)
        assert any(b"UserDeleted" in m for m in messages)
        leaked = [m for m in messages if name.encode() in m or email.encode() in m.lower()]
        assert leaked == []

    # Stopped: no file holds them either (the module processes' SQLite stores and logs, the
    # broker's own files: its JetStream store and log).
    assert files_holding(tmp_path, name, email) == {}
