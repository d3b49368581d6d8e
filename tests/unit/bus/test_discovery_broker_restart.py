"""Discovery outlives a broker restart: the bucket lives in the broker's memory and is gone
when it comes back, so announcers make it again and the directory watches it afresh."""

from __future__ import annotations

import uuid
from pathlib import Path

import anyio
import pytest

from app.split.discovery import Announcer, Directory, Instance
from tests.support.nats import nats_server
from tests.support.waits import until

pytestmark = [pytest.mark.anyio, pytest.mark.services, pytest.mark.slow]  # waits out two TTLs

TTL = 1.5


async def test_instances_are_found_again_after_the_broker_restarts(tmp_path: Path) -> None:
    module = f"m{uuid.uuid4().hex[:6]}"
    instance = Instance(
        modules=(module,), instance=uuid.uuid4().hex, url="http://127.0.0.1:9301", pid=0
    )
    with nats_server(tmp_path / "nats") as server:
        directory = Directory(server.url, ttl=TTL)
        announcer = Announcer(server.url, instance, interval=0.3, ttl=TTL)
        await directory.start()
        await announcer.start()
        try:
            await until(lambda: len(directory.live(module)) == 1, "announced")

            await anyio.to_thread.run_sync(server.restart)
            # Longer than the TTL: what is live after this was announced after the restart.
            await anyio.sleep(TTL * 2)
            await until(lambda: len(directory.live(module)) == 1, "found again")
        finally:
            await announcer.stop()
            await directory.stop()
