"""The bus's cost per event, against a raw pyee emit, measured in one run
(docs/decisions/0016-benchmarks.md).

    python bench/bus.py [--events 20000] [--rounds 3]

Raw: `AsyncIOEventEmitter.emit` to an async no-op handler (pyee schedules one task per
event), then wait for every handler. Seams: a module wraps each event in its envelope
(`ModuleBus.envelope`: ids, correlation, trace context) and the in-process transport
delivers it to a consumer's async no-op handler through its per-aggregate lane (the path
the outbox relay takes after a commit; no store is written). Both run on uvloop when it is
installed. Prints µs per event for each and the ratio (target: at most 3x).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence

from pyee.asyncio import AsyncIOEventEmitter

from app.bus import Bus, DeliveryStore, Envelope, Event, RetryPolicy
from app.bus.transport import InProcessTransport


class Pinged(Event, frozen=True, kw_only=True):
    n: int


async def raw_pyee(events: int) -> float:
    emitter = AsyncIOEventEmitter()
    done = 0
    finished = asyncio.Event()

    async def handler(n: int) -> None:
        nonlocal done
        done += 1
        if done == events:
            finished.set()

    emitter.on("pinged", handler)
    started = time.perf_counter()
    for n in range(events):
        emitter.emit("pinged", n)
    await finished.wait()
    return (time.perf_counter() - started) / events


async def seams_bus(events: int) -> float:
    bus = Bus(
        InProcessTransport(),
        retry=RetryPolicy(max_attempts=1),
        store=DeliveryStore("sqlite+aiosqlite:///:memory:"),
    )

    async def handler(_event: Pinged, _envelope: Envelope) -> None:
        return None

    producer = bus.scoped("producer", publishes=[Pinged], subscribes=[])
    bus.subscribe("consumer", Pinged, handler)
    await bus.start()
    try:
        started = time.perf_counter()
        deliveries = [
            bus.transport.publish(
                producer.envelope(Pinged(n=n), aggregate_id=f"a{n % 64}", sequence=n)
            )
            for n in range(events)
        ]
        await asyncio.gather(*deliveries)
        return (time.perf_counter() - started) / events
    finally:
        await bus.stop()


async def measure(events: int, rounds: int) -> tuple[float, float]:
    raw = min([await raw_pyee(events) for _ in range(rounds)])
    ours = min([await seams_bus(events) for _ in range(rounds)])
    return raw, ours


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/bus.py", description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args(argv)
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    raw, ours = runner(measure(arguments.events, arguments.rounds))
    print(f"events: {arguments.events}, best of {arguments.rounds} rounds each")
    print(f"raw pyee emit -> async handler:      {raw * 1e6:8.1f} us/event")
    print(f"seams envelope -> consumer handler:  {ours * 1e6:8.1f} us/event")
    print(f"seams / raw: {ours / raw:.2f}x (target: at most 3x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
