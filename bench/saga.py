"""Completed sagas per second: POST /api/orders -> payment -> order paid -> notification.

    python bench/saga.py [--orders N] [--concurrency 1,8,32] [--users U] [--port P]
                         [--wait-saga] [--server uvicorn|granian] [--pages N]

Creates an admin (`python -m app create-admin`) in a fresh temporary --data-dir, then
starts `python -m app` on it as a real process on loopback (file-backed SQLite, what a
user gets by default; APP_PASSWORD_HASHING=argon2id-fast, APP_LOG_LEVEL=WARNING and
APP_RATE_LIMIT_PER_MINUTE=0; authentication on; the ASGI server is --server, i.e.
APP_SERVER, else Seams' default). Registers users and logs each one in,
places one warm-up order per user (retrying the documented 409 + Retry-After while the
orders replica catches up), then, for each concurrency level, places N orders paid with
tok_visa from that many concurrent clients (one httpx.AsyncClient, HTTP/1.1 keep-alive,
in this process; each order sent with its user's own bearer token) and times each order
from its POST being sent to its notification being recorded.

Notifications are observed by ONE poller, logged in as the admin (a user would see only
their own), paging GET /api/notifications?limit=200&cursor=<last seen id> every ~5 ms
(ids are UUIDv7, so the cursor only returns new rows); the first time it sees an order's
payment_succeeded notification is that saga's end. Clients do not wait for their saga
before placing the next order: this is a throughput run, so the latency includes the queue
of sagas in flight (with --wait-saga each client waits for its saga first: a closed loop,
latency without that queue). With --pages N every level runs twice in the same server: with
no stream open, then with N admins' live-page streams open (GET /api/watch/stream, read
to the end of each chunk and parsed into events, as the page does, in this process), and
the ratio of the two rates is printed (the server's side of a page only: bench/page.py opens
a real Chromium page and measures what its rendering costs too). Not a test; nothing
asserts, but the exit status is 1 when an order failed, a saga never completed or the
server did not stop cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from harness import (
    SERVERS,
    Account,
    commit,
    cpu_seconds,
    create_admin,
    free_port,
    log_in,
    machine,
    percentile,
    register_users,
    start_seams,
)

NOTIFICATION_KIND = "payment_succeeded"
POLL_INTERVAL = 0.005
SAGA_TIMEOUT = 60.0  # after a level's last POST, how long its notifications may take
WARMUP_CONCURRENCY = 8


def order_body(number: int) -> dict[str, Any]:
    """No user_id: the order is the caller's, i.e. the bearer token's user."""
    return {
        "currency": "EUR",
        "payment_token": "tok_visa",
        "items": [{"sku": f"bench-{number % 7}", "quantity": 1 + number % 3, "unit_price": 1999}],
    }


class Poller:
    """One client, as the admin, paging the notifications as they are recorded; first sight
    per order."""

    def __init__(self, base_url: str, token: str, *, interval: float = POLL_INTERVAL) -> None:
        self._base_url = base_url
        self._headers = {"Authorization": f"Bearer {token}"}
        self._interval = interval
        self._cursor: str | None = None
        self._stopping = False
        self.seen: dict[str, float] = {}  # order id -> perf_counter() when first seen
        self.recorded: dict[str, float] = {}  # order id -> the row's created_at (epoch s)
        self.requests = 0
        self.errors = 0
        self._waiters: dict[str, asyncio.Future[None]] = {}

    async def run(self) -> None:
        async with httpx.AsyncClient(
            base_url=self._base_url, timeout=30.0, headers=self._headers
        ) as client:
            while not self._stopping:
                params: dict[str, str | int] = {"limit": 200}
                if self._cursor is not None:
                    params["cursor"] = self._cursor
                try:
                    response = await client.get("/api/notifications", params=params)
                except httpx.HTTPError:
                    self.errors += 1
                    await asyncio.sleep(self._interval)
                    continue
                now = time.perf_counter()
                self.requests += 1
                if response.status_code != 200:
                    self.errors += 1
                    await asyncio.sleep(self._interval)
                    continue
                page = response.json()
                for item in page["items"]:
                    if item["kind"] == NOTIFICATION_KIND and item["order_id"] not in self.seen:
                        self.seen[item["order_id"]] = now
                        self.recorded[item["order_id"]] = datetime.fromisoformat(
                            item["created_at"]
                        ).timestamp()
                        waiter = self._waiters.pop(item["order_id"], None)
                        if waiter is not None and not waiter.done():
                            waiter.set_result(None)
                if page["items"]:
                    self._cursor = page["items"][-1]["id"]
                if page["next_cursor"] is None:  # caught up: wait; else read the next page now
                    await asyncio.sleep(self._interval)

    def stop(self) -> None:
        self._stopping = True

    async def wait_one(self, order_id: str, *, timeout: float) -> bool:
        """Wait until this one order was seen; False if the timeout passed first."""
        if order_id in self.seen:
            return True
        waiter = self._waiters.setdefault(order_id, asyncio.get_running_loop().create_future())
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            self._waiters.pop(order_id, None)
            return False
        return True

    async def wait_for(self, order_ids: Collection[str], *, timeout: float) -> list[str]:
        """Wait until every order was seen or the timeout passes; the ones never seen."""
        deadline = time.perf_counter() + timeout
        missing = [order_id for order_id in order_ids if order_id not in self.seen]
        while missing and time.perf_counter() < deadline:
            await asyncio.sleep(self._interval)
            missing = [order_id for order_id in missing if order_id not in self.seen]
        return missing


@dataclass
class Placed:
    order_id: str
    sent: float  # perf_counter() just before the POST
    sent_wall: float  # time.time() at the same moment, to compare with the row's created_at
    answered: float  # perf_counter() when the 201 arrived


@dataclass
class Level:
    concurrency: int
    pages: int = 0  # live-page streams open during the level
    placed: list[Placed] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    first_sent: float = 0.0
    last_seen: float = 0.0
    server_cpu: float | None = None  # CPU seconds the server used during the level


async def place_orders(
    client: httpx.AsyncClient,
    numbers: Sequence[int],
    users: Sequence[Account],
    concurrency: int,
    level: Level,
    *,
    poller: Poller,
    closed_loop: bool,
) -> None:
    """`concurrency` clients sharing one queue of orders, each one POST at a time; with
    closed_loop each also waits for its saga's notification before its next POST."""
    queue = iter(numbers)

    async def one_client() -> None:
        for number in queue:
            user = users[number % len(users)]
            body = order_body(number)
            sent, sent_wall = time.perf_counter(), time.time()
            try:
                response = await client.post("/api/orders", json=body, headers=user.headers)
            except httpx.HTTPError as error:
                level.errors.append(f"POST /api/orders: {error!r}")
                continue
            if response.status_code != 201:
                level.errors.append(f"POST /api/orders {response.status_code}: {response.text}")
                continue
            placed = Placed(response.json()["id"], sent, sent_wall, time.perf_counter())
            level.placed.append(placed)
            if closed_loop:
                await poller.wait_one(placed.order_id, timeout=SAGA_TIMEOUT)

    level.first_sent = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(concurrency)))


async def run_level(
    base_url: str,
    poller: Poller,
    users: Sequence[Account],
    orders: int,
    concurrency: int,
    *,
    closed_loop: bool,
    server_pid: int,
) -> Level:
    level = Level(concurrency)
    cpu_before = cpu_seconds(server_pid)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=30.0, limits=limits) as client:
        await place_orders(
            client,
            range(orders),
            users,
            concurrency,
            level,
            poller=poller,
            closed_loop=closed_loop,
        )
    ids = [placed.order_id for placed in level.placed]
    level.missing = await poller.wait_for(ids, timeout=SAGA_TIMEOUT)
    seen = [poller.seen[order_id] for order_id in ids if order_id in poller.seen]
    level.last_seen = max(seen, default=level.first_sent)
    cpu_after = cpu_seconds(server_pid)
    if cpu_before is not None and cpu_after is not None:
        level.server_cpu = cpu_after - cpu_before
    return level


async def warm_up(base_url: str, poller: Poller, users: Sequence[Account]) -> float:
    """One order per user, retrying 409 + Retry-After until orders knows the user; then wait
    for their notifications (so the notifications replica knows every user too). Seconds."""
    started = time.perf_counter()
    placed: list[str] = []
    queue = iter(enumerate(users))

    async def one_client(client: httpx.AsyncClient) -> None:
        for number, user in queue:
            deadline = time.perf_counter() + 30.0
            while True:
                response = await client.post(
                    "/api/orders", json=order_body(number), headers=user.headers
                )
                if response.status_code == 201:
                    placed.append(response.json()["id"])
                    break
                retry_after = response.headers.get("retry-after")
                if response.status_code != 409 or retry_after is None:
                    raise RuntimeError(f"warm-up order: {response.status_code} {response.text}")
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"user {user.id} never reached orders: {response.text}")
                await asyncio.sleep(float(retry_after))

    async with httpx.AsyncClient(base_url=base_url, timeout=30.0) as client:
        await asyncio.gather(*(one_client(client) for _ in range(WARMUP_CONCURRENCY)))
    missing = await poller.wait_for(placed, timeout=SAGA_TIMEOUT)
    if missing:
        raise RuntimeError(f"warm-up: {len(missing)} of {len(placed)} sagas never completed")
    return time.perf_counter() - started


class PageStream:
    """One admin's live page, as far as the server can tell: GET /api/watch/stream kept
    open, every chunk read and split into its events."""

    def __init__(self, base_url: str, token: str) -> None:
        self._base_url = base_url
        self._token = token
        self.events = 0
        self._task: asyncio.Task[None] | None = None

    def open(self) -> None:
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        headers = {"Authorization": f"Bearer {self._token}"}
        async with (
            httpx.AsyncClient(base_url=self._base_url, timeout=None) as client,
            client.stream("GET", "/api/watch/stream", headers=headers) as response,
        ):
            buffer = b""
            async for chunk in response.aiter_bytes():
                buffer += chunk
                *complete, buffer = buffer.split(b"\r\n\r\n")
                self.events += sum(1 for event in complete if b"\ndata: " in event)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def rate_of(level: Level, poller: Poller) -> float:
    wall = level.last_seen - level.first_sent
    done = sum(1 for placed in level.placed if placed.order_id in poller.seen)
    return done / wall if wall > 0 else 0.0


def report(level: Level, poller: Poller) -> tuple[str, str]:
    """The level's table row, and its line about the poller's detection delay."""
    done = [placed for placed in level.placed if placed.order_id in poller.seen]
    sagas = [poller.seen[placed.order_id] - placed.sent for placed in done]
    posts = [placed.answered - placed.sent for placed in level.placed]
    detection = [
        poller.seen[placed.order_id]
        - placed.sent
        - (poller.recorded[placed.order_id] - placed.sent_wall)
        for placed in done
    ]
    wall = level.last_seen - level.first_sent
    rate = len(done) / wall if wall > 0 else 0.0
    errors = len(level.errors) + len(level.missing)
    label = f"{level.concurrency}" + (f" +{level.pages}pg" if level.pages else "")
    row = (
        f"{label:>11}  {len(done):>6}  {rate:>8.1f}  {ms(percentile(sagas, 0.5))}"
        f"  {ms(percentile(sagas, 0.99))}  {ms(percentile(posts, 0.5))}"
        f"  {ms(percentile(posts, 0.99))}  {errors:>6}"
    )
    cpu = (
        "server CPU n/a"
        if level.server_cpu is None or not done
        else f"server CPU {level.server_cpu / wall:.2f} cores, "
        f"{level.server_cpu / len(done) * 1000:.1f} ms per saga (poller included)"
    )
    note = (
        f"  c={level.concurrency}: wall {wall:.2f} s; {cpu}; poller saw each notification "
        f"{percentile(detection, 0.5) * 1000:.1f} ms (p50) after its created_at"
    )
    return row, note


async def drive(
    base_url: str,
    admin_token: str,
    users: Sequence[Account],
    orders: int,
    levels: Sequence[int],
    *,
    closed_loop: bool,
    server_pid: int,
    pages: int = 0,
) -> tuple[list[Level], Poller]:
    poller = Poller(base_url, admin_token)
    polling = asyncio.create_task(poller.run())
    try:
        warm = await warm_up(base_url, poller, users)
        print(f"warm-up: {len(users)} orders (one per user) completed in {warm:.2f} s")
        results = []
        for concurrency in levels:
            for open_pages in (0, pages) if pages else (0,):
                streams = [PageStream(base_url, admin_token) for _ in range(open_pages)]
                for stream in streams:
                    stream.open()
                await asyncio.sleep(0.5 if streams else 0)  # connected, replay read
                try:
                    level = await run_level(
                        base_url,
                        poller,
                        users,
                        orders,
                        concurrency,
                        closed_loop=closed_loop,
                        server_pid=server_pid,
                    )
                finally:
                    for stream in streams:
                        await stream.close()
                level.pages = open_pages
                if streams:
                    print(f"  c={concurrency}: {open_pages} page(s) read "
                          f"{min(s.events for s in streams)} events each")  # fmt: skip
                results.append(level)
        return results, poller
    finally:
        poller.stop()
        await polling


def parse_levels(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected e.g. 1,8,32") from None
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: every level must be >= 1")
    return levels


def event_loop_runner() -> Callable[[Any], Any]:
    """uvloop for the load generator when it is installed (it is, with uvicorn[standard])."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python bench/saga.py", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--orders", type=int, default=300, help="orders per level (300)")
    parser.add_argument(
        "--concurrency", type=parse_levels, default=[1, 8, 32], help="levels (1,8,32)"
    )
    parser.add_argument("--users", type=int, default=20, help="users the orders cycle over (20)")
    parser.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    parser.add_argument(
        "--server",
        choices=SERVERS,
        default=None,
        help="the ASGI server python -m app runs (APP_SERVER; default: Seams' own default)",
    )
    parser.add_argument(
        "--wait-saga",
        action="store_true",
        help="closed loop: each client waits for its order's notification before its next "
        "POST (latency without a backlog; default: clients only wait for the 201)",
    )
    parser.add_argument(
        "--pages",
        type=int,
        default=0,
        help="run each level again with this many admins' live-page streams open "
        "(GET /api/watch/stream) and print the ratio (default: 0, no stream)",
    )
    arguments = parser.parse_args(argv)
    port = arguments.port or free_port()

    data = Path(tempfile.mkdtemp(prefix="seams-saga-"))
    mode = (
        "closed loop (each client waits for its saga)"
        if arguments.wait_saga
        else "clients wait for the 201 only"
    )
    print(
        f"Seams saga benchmark: commit {commit()}, {machine()}\n"
        f"server: python -m app ({arguments.server or 'its default server'}, 1 worker) on "
        f"127.0.0.1:{port}, data dir {data}"
        f" (file-backed SQLite), APP_PASSWORD_HASHING=argon2id-fast, APP_LOG_LEVEL=WARNING,"
        f" APP_RATE_LIMIT_PER_MINUTE=0; auth on\n"
        f"load: {arguments.orders} orders per level, tok_visa, {arguments.users} users, "
        f"httpx.AsyncClient HTTP/1.1 keep-alive, each order with its user's bearer token, "
        f"{mode}; 1 notifications poller (as an admin) every {POLL_INTERVAL * 1000:.0f} ms",
        flush=True,
    )
    try:
        admin_email = create_admin(data / "db")
    except RuntimeError:
        shutil.rmtree(data, ignore_errors=True)
        raise
    server = start_seams(
        data / "db", port=port, log_path=data / "server.log", server=arguments.server
    )
    try:
        server.wait_until("/ready")
        with httpx.Client(base_url=server.base_url, timeout=30.0) as client:
            admin_token = log_in(client, admin_email)
        started = time.perf_counter()
        users = register_users(server.base_url, arguments.users, tag=data.name)
        print(
            f"registered and logged in {len(users)} users in {time.perf_counter() - started:.2f} s"
        )
        run = event_loop_runner()
        levels, poller = run(
            drive(
                server.base_url,
                admin_token,
                users,
                arguments.orders,
                arguments.concurrency,
                closed_loop=arguments.wait_saga,
                server_pid=server.process.pid,
                pages=arguments.pages,
            )
        )
    finally:
        code = server.stop()
        log = server.log_tail(lines=10_000)
        shutil.rmtree(data, ignore_errors=True)

    print()
    print(
        "concurrency  orders   sagas/s     saga p50     saga p99     POST p50     POST p99  errors"
    )
    notes = []
    for level in levels:
        row, note = report(level, poller)
        print(row)
        notes.append(note)
    print("\n".join(notes))
    for plain, watched in itertools.pairwise(levels):
        if plain.pages == 0 and watched.pages and plain.concurrency == watched.concurrency:
            print(
                f"  c={plain.concurrency}: with {watched.pages} page(s) open "
                f"{rate_of(watched, poller) / rate_of(plain, poller):.2f}x the sagas/s of none"
            )
    print(
        f"poller: {poller.requests} GET /api/notifications ({poller.errors} failed); "
        f"saga = POST sent -> poller first sees the {NOTIFICATION_KIND} notification"
    )
    for level in levels:
        for error in itertools.islice(level.errors, 3):
            print(f"  c={level.concurrency} error: {error[:300]}")
        if level.missing:
            print(f"  c={level.concurrency}: {len(level.missing)} sagas never completed")
    server_errors = sum(1 for line in log.splitlines() if "ERROR" in line or "Traceback" in line)
    # 0 is a clean exit; so is -15 (before 05ae5f7, uvicorn re-raised the SIGTERM once its
    # graceful shutdown was done).
    clean = code in (0, -signal.SIGTERM)
    print(
        f"server: SIGTERM -> exit {code} ({'clean' if clean else 'NOT clean'}); "
        f"{server_errors} ERROR/Traceback lines in its log"
    )
    failed = any(level.errors or level.missing for level in levels) or not clean
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
