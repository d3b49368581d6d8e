"""Discovery on NATS: instances announce themselves, drop out when they stop or die."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from app.split.discovery import Announcer, Directory, Instance
from tests.support.nats import NatsServer, broker_link, nats_server
from tests.support.waits import until

pytestmark = [pytest.mark.anyio, pytest.mark.services]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    with nats_server(tmp_path_factory.mktemp("nats")) as running:
        yield running


def instance(module: str, port: int) -> Instance:
    return Instance(
        modules=(module,), instance=uuid.uuid4().hex, url=f"http://127.0.0.1:{port}", pid=0
    )


async def test_an_announced_instance_is_live_and_a_stopped_one_is_gone_at_once(
    server: NatsServer,
) -> None:
    module = f"m{uuid.uuid4().hex[:6]}"
    directory = Directory(server.url)
    await directory.start()
    announcer = Announcer(server.url, instance(module, 9001))
    try:
        await announcer.start()
        await until(
            lambda: [i.url for i in directory.live(module)] == ["http://127.0.0.1:9001"],
            "the announced instance",
        )
        await announcer.stop()
        await until(lambda: directory.live(module) == [], "the instance to be gone")
    finally:
        await announcer.stop()
        await directory.stop()


async def test_replicas_are_picked_in_turn(server: NatsServer) -> None:
    module = f"m{uuid.uuid4().hex[:6]}"
    directory = Directory(server.url)
    await directory.start()
    announcers = [Announcer(server.url, instance(module, port)) for port in (9101, 9102, 9103)]
    try:
        for announcer in announcers:
            await announcer.start()
        await until(lambda: len(directory.live(module)) == 3, "three instances")
        picked = [directory.pick(module) for _ in range(6)]
        urls = [i.url for i in picked if i is not None]
        assert sorted(urls) == sorted(
            2 * ["http://127.0.0.1:9101", "http://127.0.0.1:9102", "http://127.0.0.1:9103"]
        )
        assert directory.pick("no-such-module") is None
    finally:
        for announcer in announcers:
            await announcer.stop()
        await directory.stop()


async def test_an_instance_that_dies_without_a_word_drops_out_within_the_ttl(
    server: NatsServer,
) -> None:
    module = f"m{uuid.uuid4().hex[:6]}"
    directory = Directory(server.url, ttl=1.5)
    await directory.start()
    async with broker_link(server.url) as link:
        announcer = Announcer(link.url, instance(module, 9201), interval=0.3, ttl=1.5)
        try:
            await announcer.start()
            await until(lambda: len(directory.live(module)) == 1, "the instance")
            # Dying: no refresh and no withdrawal reaches the broker any more.
            link.cut()
            died = time.monotonic()
            await until(lambda: directory.live(module) == [], "the silent instance to drop", 5)
            assert time.monotonic() - died < 3.0
        finally:
            await directory.stop()
            link.mend()  # only so that stopping it finds the broker, not a timeout
            await announcer.stop()
