"""Password hashing is bounded: a few hashes run, a few wait, one client holds at most a couple
of places, and anything beyond is answered at once (503 or 429) without hashing."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import AsyncIterator, Callable

import pytest

from app.kernel.errors import TooManyRequests, Unavailable
from app.modules.users.passwords import (
    HASHING_NICENESS,
    HashingGate,
    Passwords,
    hashes_at_once,
    make_hasher,
)
from tests.support.waits import until

pytestmark = pytest.mark.anyio


@pytest.fixture
async def release() -> AsyncIterator[threading.Event]:
    """Blocked hashes go on when this is set (always, at the end of the test)."""
    event = threading.Event()
    yield event
    event.set()


def blocked(release: threading.Event) -> Callable[[], str]:
    def work() -> str:
        release.wait(10)
        return "hashed"

    return work


async def test_beyond_its_places_the_gate_answers_503_at_once_without_hashing(
    release: threading.Event,
) -> None:
    gate = HashingGate(at_once=1, waiting=2)
    held = [asyncio.create_task(gate.run(blocked(release), f"client-{n}")) for n in range(3)]
    await until(lambda: gate.held == 3, "three places held", 5)
    hashed = threading.Event()

    with pytest.raises(Unavailable) as refused:
        await gate.run(hashed.set, "someone-else")

    assert refused.value.status == 503
    assert refused.value.headers["Retry-After"] == "1"
    release.set()
    assert await asyncio.gather(*held) == ["hashed"] * 3
    assert not hashed.is_set()
    assert gate.held == 0


async def test_one_client_holds_at_most_two_places_and_others_still_get_in(
    release: threading.Event,
) -> None:
    gate = HashingGate(at_once=1, waiting=4)
    mine = [asyncio.create_task(gate.run(blocked(release), "flooder")) for _ in range(2)]
    await until(lambda: gate.held == 2, "two places held", 5)

    with pytest.raises(TooManyRequests) as refused:
        await gate.run(blocked(release), "flooder")
    theirs = asyncio.create_task(gate.run(lambda: "theirs", "someone-else"))
    release.set()

    assert refused.value.status == 429
    assert await theirs == "theirs"
    await asyncio.gather(*mine)


async def test_a_free_turn_goes_to_a_client_with_nothing_running_before_a_flooders_next(
    release: threading.Event,
) -> None:
    gate = HashingGate(at_once=1, waiting=4)
    order: list[str] = []

    def work(name: str) -> Callable[[], None]:
        return lambda: order.append(name)

    first = asyncio.create_task(gate.run(lambda: order.append(blocked(release)()), "flooder"))
    await until(lambda: gate.held == 1, "one place held", 5)
    second = asyncio.create_task(gate.run(work("flooder again"), "flooder"))
    await until(lambda: gate.held == 2, "two places held", 5)
    theirs = asyncio.create_task(gate.run(work("someone else"), "someone-else"))
    await until(lambda: gate.held == 3, "three places held", 5)
    release.set()
    await asyncio.gather(first, second, theirs)

    assert order == ["hashed", "someone else", "flooder again"]


async def test_a_caller_that_goes_away_keeps_its_place_until_its_hash_ends(
    release: threading.Event,
) -> None:
    gate = HashingGate(at_once=1, waiting=0)
    caller = asyncio.create_task(gate.run(blocked(release), "c1"))
    await until(lambda: gate.held == 1, "one place held", 5)
    caller.cancel()
    await asyncio.gather(caller, return_exceptions=True)

    with pytest.raises(Unavailable):
        await gate.run(lambda: "more", "c2")
    release.set()
    await until(lambda: gate.held == 0, "no places held", 5)
    assert await gate.run(lambda: "more", "c2") == "more"


async def test_registration_and_password_changes_hash_through_the_same_gate(
    release: threading.Event,
) -> None:
    passwords = Passwords(make_hasher("argon2id-fast"), at_once=1)
    held = [
        asyncio.create_task(passwords.gate.run(blocked(release), f"c{n}"))
        for n in range(passwords.gate.places)
    ]
    await until(lambda: passwords.gate.held == passwords.gate.places, "every place held", 5)

    with pytest.raises(Unavailable):
        await passwords.hash("a new password")  # what registration and changes call
    with pytest.raises(Unavailable):
        await passwords.verify("$argon2id$…", "a password", client="c9")
    release.set()
    await asyncio.gather(*held)
    assert await passwords.verify(await passwords.hash("a new password"), "a new password")


def test_by_default_as_many_hashes_run_as_keep_the_cpus_busy() -> None:
    real, fast = make_hasher("argon2id"), make_hasher("argon2id-fast")

    assert hashes_at_once(real, 3) == 3
    assert 1 <= hashes_at_once(real, 0) <= hashes_at_once(fast, 0)


@pytest.mark.skipif(sys.platform != "linux", reason="a thread's own niceness is Linux's")
async def test_hashes_run_below_the_event_loops_priority() -> None:
    gate = HashingGate(at_once=1, waiting=0)

    def niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    assert await gate.run(niceness, "c1") == min(niceness() + HASHING_NICENESS, 19)
