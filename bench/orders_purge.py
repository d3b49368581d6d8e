"""The SQLite orders documents' purge of expired idempotency keys, timed on a store of
orders that all hold a key (docs/decisions/0038-orders-store-outages-and-purges.md).

    python bench/orders_purge.py [--orders 10000] [--expired 0.1] [--rounds 5]

A store file in a temporary directory gets `--orders` orders, each placed with an
Idempotency-Key, a fraction `--expired` of them expired. Each round times one purge of a
fresh copy of that file (the first purge, which has keys to drop) and then one purge of
the same store again (nothing left to drop: the cost of a purge that finds nothing, every
APP_PURGE_INTERVAL_SECONDS). Prints the median seconds of each and the longest single
turn the event loop had to wait while the first purge ran.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from harness import commit, machine

from app.kernel.ids import isoformat, utcnow
from app.modules.orders.store_sqlite import SqliteOrderDocuments


def an_order(n: int, expires_in: timedelta) -> dict[str, Any]:
    now = utcnow()
    return {
        "_id": f"order-{n:08d}",
        "user_id": f"user-{n % 100}",
        "status": "PAID",
        "currency": "EUR",
        "items": [{"sku": "book", "quantity": 2, "unit_price": 1250}] * 3,
        "total": 7500,
        "created_at": isoformat(now),
        "updated_at": isoformat(now),
        "outbox": [],
        "handled": [f"event-{n}-{k}" for k in range(3)],
        "handled_at": None,
        "idempotency": {
            "key": f"user-{n % 100}\x1fkey-{n}",
            "fingerprint": "f" * 64,
            "status": 201,
            "body": f'{{"id": "order-{n:08d}", "status": "PENDING", "total": 7500}}',
            "expires_at": isoformat(now + expires_in),
        },
    }


async def build(path: Path, orders: int, expired: float) -> None:
    store = SqliteOrderDocuments(str(path), f"sqlite:///{path}")
    await store.open()
    every = max(1, round(1 / expired)) if expired > 0 else orders + 1
    for n in range(orders):
        gone = n % every == 0
        await store.insert_order(an_order(n, timedelta(hours=-1 if gone else 24)))
    await store.close()


async def stalls(done: asyncio.Event) -> float:
    """The longest wait of a 1 ms tick while `done` is not set: the loop's longest stall."""
    longest = 0.0
    while not done.is_set():
        before = time.perf_counter()
        await asyncio.sleep(0.001)
        longest = max(longest, time.perf_counter() - before - 0.001)
    return longest


def fresh_copy(source: Path, scratch: Path) -> None:
    shutil.copyfile(source, scratch)
    scratch.chmod(0o600)  # as the store keeps it: it says so otherwise


async def one_round(source: Path, scratch: Path) -> tuple[float, float, float, int]:
    fresh_copy(source, scratch)
    store = SqliteOrderDocuments(str(scratch), f"sqlite:///{scratch}")
    await store.open()
    try:
        cutoff = utcnow() - timedelta(days=7)
        done = asyncio.Event()
        watcher = asyncio.create_task(stalls(done))
        started = time.perf_counter()
        purged = await store.purge(cutoff, utcnow())
        first = time.perf_counter() - started
        done.set()
        stall = await watcher
        started = time.perf_counter()
        await store.purge(cutoff, utcnow())
        again = time.perf_counter() - started
    finally:
        await store.close()
    return first, again, stall, purged["idempotency_keys"]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--expired", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"commit {commit()}  {machine()}")
    with tempfile.TemporaryDirectory() as directory:
        source = Path(directory) / "orders.db"
        await build(source, args.orders, args.expired)
        scratch = Path(directory) / "scratch.db"
        results = [await one_round(source, scratch) for _ in range(args.rounds)]
    firsts, agains, longest, keys = zip(*results, strict=True)
    print(
        f"{args.orders} orders with keys, {keys[0]} expired; median of {args.rounds} rounds:\n"
        f"  first purge   {statistics.median(firsts):.4f} s  (loop's longest stall "
        f"{max(longest) * 1000:.1f} ms)\n"
        f"  purge again   {statistics.median(agains):.4f} s"
    )


if __name__ == "__main__":
    asyncio.run(main())
