"""Password hashing with argon2id (argon2-cffi). Hashing is slow on purpose, so it runs in
threads of its own, off the event loop and below its priority, and only a few at a time: every
hash and every check, for logins, registrations and password changes, takes a place at one
`HashingGate`. A request that finds no place is answered at once, without hashing, so a flood
of logins costs the flooder their answers and not the CPU everyone else's logins need."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from app.kernel.errors import TooManyRequests, Unavailable

T = TypeVar("T")

WAITING_PER_HASH_AT_ONCE = 4  # a full queue drains in about four hash times (well under 1 s)
PER_CLIENT = 2  # places one client may hold: a flood from one address leaves room for others
HASHING_NICENESS = 10  # how far below the event loop hashing threads run


def make_hasher(profile: str) -> PasswordHasher:
    if profile == "argon2id-fast":  # tests only: same algorithm, cheap parameters
        return PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    return PasswordHasher()  # argon2id with the RFC 9106 low-memory recommended parameters


def hashes_at_once(hasher: PasswordHasher, configured: int) -> int:
    """`configured`, or (0) as many as keep the CPUs busy: one argon2 hash already runs
    `parallelism` threads, so more at once would only make each one slower."""
    if configured > 0:
        return configured
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cpus or 1) // hasher.parallelism)


class HashingGate:
    """At most `at_once` hashes run and `waiting` more wait. One client holds at most
    `per_client` of those places, and a free turn goes to the waiting client that holds the
    fewest (then first come), so a flooder's queue never stands in front of anyone else's
    login. Beyond the places: refused at once, without hashing."""

    def __init__(self, at_once: int, waiting: int, per_client: int = PER_CLIENT) -> None:
        self.places = at_once + waiting
        self._per_client = per_client
        self._free_turns = at_once
        self._threads = ThreadPoolExecutor(
            at_once, thread_name_prefix="password-hashing", initializer=_below_the_event_loop
        )
        self._waiting: list[tuple[str | None, asyncio.Future[None]]] = []
        self._held_by: Counter[str | None] = Counter()  # places: running and waiting
        self._working: set[asyncio.Task[Any]] = set()

    @property
    def held(self) -> int:
        """Places taken now: hashes running plus hashes waiting to run."""
        return self._held_by.total()

    async def run(self, work: Callable[[], T], client: str | None) -> T:
        self._take_place(client)
        task = asyncio.create_task(self._run_in_turn(work, client))
        self._working.add(task)
        task.add_done_callback(self._working.discard)
        # A caller that goes away does not free the place: the thread cannot be stopped.
        return await asyncio.shield(task)

    def _take_place(self, client: str | None) -> None:
        if self.held >= self.places:
            raise Unavailable(
                "too many passwords are being checked right now; try again in a moment",
                headers={"Retry-After": "1"},
            )
        if client is not None and self._held_by[client] >= self._per_client:
            raise TooManyRequests(
                "this client already has logins being checked; wait for their answers",
                retry_after_seconds=1,
            )
        self._held_by[client] += 1

    async def _run_in_turn(self, work: Callable[[], T], client: str | None) -> T:
        try:
            await self._turn(client)
            try:
                return await asyncio.get_running_loop().run_in_executor(self._threads, work)
            finally:
                self._end_turn()
        finally:
            _decrement(self._held_by, client)

    async def _turn(self, client: str | None) -> None:
        if self._free_turns and not self._waiting:
            self._free_turns -= 1
            return
        turn = asyncio.get_running_loop().create_future()
        self._waiting.append((client, turn))
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # given a turn it will not use
                self._end_turn()
            else:
                self._waiting.remove((client, turn))
            raise

    def _end_turn(self) -> None:
        """Hand the turn on. The hash ending still holds its place here, so a client that just
        had a turn goes behind one that has been waiting with fewer places."""
        if not self._waiting:
            self._free_turns += 1
            return
        fairest = min(
            range(len(self._waiting)),
            key=lambda index: (self._held_by[self._waiting[index][0]], index),
        )
        _, turn = self._waiting.pop(fairest)
        turn.set_result(None)


def _below_the_event_loop() -> None:
    """Hashing threads yield the CPU to the event loop, so refusals and every other request
    stay quick while hashes run; argon2's own lane threads inherit the niceness."""
    if sys.platform == "linux":  # Linux alone sets one thread's niceness by its id
        thread = threading.get_native_id()
        with contextlib.suppress(OSError):
            lower = min(os.getpriority(os.PRIO_PROCESS, thread) + HASHING_NICENESS, 19)
            os.setpriority(os.PRIO_PROCESS, thread, lower)


def _decrement(counts: Counter[str | None], client: str | None) -> None:
    counts[client] -= 1
    if counts[client] <= 0:
        del counts[client]  # client addresses come and go: keep only the ones holding places


class Passwords:
    """The one place passwords are hashed and checked, all through one `HashingGate`."""

    def __init__(self, hasher: PasswordHasher, at_once: int = 0) -> None:
        self._hasher = hasher
        running = hashes_at_once(hasher, at_once)
        self.gate = HashingGate(running, WAITING_PER_HASH_AT_ONCE * running)

    async def hash(self, password: str, *, client: str | None = None) -> str:
        return await self.gate.run(lambda: self._hasher.hash(password), client)

    async def verify(self, password_hash: str, password: str, *, client: str | None = None) -> bool:
        return await self.gate.run(lambda: self._checks(password_hash, password), client)

    def _checks(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False
