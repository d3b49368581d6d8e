"""The bus's cost per event, against a raw pyee emit, measured in one run
(docs/decisions/0016-benchmarks.md).

    python bench/bus.py [--events 20000] [--rounds 3] [--hops 2000] [--record]

Raw: `AsyncIOEventEmitter.emit` to an async no-op handler (pyee schedules one task per
event), then wait for every handler. Seams: a module wraps each event in its envelope
(`ModuleBus.envelope`: ids, correlation, trace context) and the in-process transport
delivers it to a consumer's async no-op handler through its per-aggregate lane (the path
the outbox relay takes after a commit; no store is written). Both run on uvloop when it is
installed. Prints µs per event for each and the ratio (target: at most 3x).

Then the hop: `--hops` events published one at a time, each timed from its publish to its
handler having run (p50/p99), raw pyee and Seams in the same run, as a ratio. The live page
shows the same hop, measured from the stream; `--record` writes these figures into
app/gateway/benchmarks.json for it (bench/record.py).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from harness import REPO, commit, machine, percentile
from pyee.asyncio import AsyncIOEventEmitter
from record import Baseline, Hop, record

from app.bus import Bus, DeliveryStore, Envelope, Event, RetryPolicy
from app.bus.transport import InProcessTransport


class Pinged(Event, frozen=True, kw_only=True):
    wire_name = "Pinged"
    version = 1

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
    bus = in_process_bus()

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


async def raw_pyee_hops(events: int) -> list[float]:
    """Seconds from each emit to its handler having run, one event at a time."""
    emitter = AsyncIOEventEmitter()
    handled = asyncio.Event()
    at = 0.0

    async def handler(_n: int) -> None:
        nonlocal at
        at = time.perf_counter()
        handled.set()

    emitter.on("pinged", handler)
    hops: list[float] = []
    for n in range(events):
        handled.clear()
        sent = time.perf_counter()
        emitter.emit("pinged", n)
        await handled.wait()
        hops.append(at - sent)
    return hops


class HopProbe:
    """A consumer's no-op handler that notes when each event reached it."""

    def __init__(self) -> None:
        self.at = 0.0
        self.count = 0
        self.wanted = 0
        self.handled = asyncio.Event()
        self.all_handled = asyncio.Event()

    async def handler(self, _event: Pinged, _envelope: Envelope) -> None:
        self.at = time.perf_counter()
        self.count += 1
        self.handled.set()
        if self.count == self.wanted:
            self.all_handled.set()


async def seams_hop_figures(bus: Bus, hops: int, burst: int) -> tuple[list[float], float]:
    """On a bus with any transport (bench/split.py runs it over NATS): seconds from each
    envelope's publish to its consumer's handler having run, `hops` events one at a time;
    then events/s for `burst` (at least 1) events published at once."""
    probe = HopProbe()
    producer = bus.scoped("hop-producer", publishes=[Pinged], subscribes=[])
    bus.subscribe("hop-consumer", Pinged, probe.handler)

    def envelope(n: int) -> Envelope:
        return producer.envelope(Pinged(n=n), aggregate_id=f"a{n % 64}", sequence=n)

    await bus.start()
    try:
        times: list[float] = []
        for n in range(hops):
            probe.handled.clear()
            sent = time.perf_counter()
            await bus.transport.publish(envelope(n))
            await probe.handled.wait()
            times.append(probe.at - sent)
        probe.count, probe.wanted = 0, burst
        started = time.perf_counter()
        await asyncio.gather(*(bus.transport.publish(envelope(hops + n)) for n in range(burst)))
        await probe.all_handled.wait()
        return times, burst / (time.perf_counter() - started)
    finally:
        await bus.stop()


def in_process_bus() -> Bus:
    return Bus(
        InProcessTransport(),
        retry=RetryPolicy(max_attempts=1),
        store=DeliveryStore("sqlite+aiosqlite:///:memory:"),
    )


@dataclass(frozen=True)
class Figures:
    raw: float  # s per event, a burst
    ours: float
    raw_hops: list[float]  # s per hop, one at a time
    our_hops: list[float]
    rate: float  # events/s through the bus the hops were timed on, a burst


async def measure(events: int, rounds: int, hops: int) -> Figures:
    raw = min([await raw_pyee(events) for _ in range(rounds)])
    ours = min([await seams_bus(events) for _ in range(rounds)])
    our_hops, rate = await seams_hop_figures(in_process_bus(), hops, burst=events)
    return Figures(raw, ours, await raw_pyee_hops(hops), our_hops, rate)


def ms(samples: list[float], fraction: float) -> float:
    return percentile(samples, fraction) * 1000


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/bus.py", description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hops", type=int, default=2000, help="hops timed one by one (2000)")
    parser.add_argument(
        "--record",
        action="store_true",
        help="write the hop's figures into app/gateway/benchmarks.json (served to the page)",
    )
    arguments = parser.parse_args(argv)
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    print(f"Seams bus benchmark: commit {commit()}, {machine()}")
    figures = runner(measure(arguments.events, arguments.rounds, arguments.hops))
    raw, ours = figures.raw, figures.ours
    print(f"events: {arguments.events}, best of {arguments.rounds} rounds each")
    print(f"raw pyee emit -> async handler:      {raw * 1e6:8.1f} us/event")
    print(f"seams envelope -> consumer handler:  {ours * 1e6:8.1f} us/event")
    print(f"seams / raw: {ours / raw:.2f}x (target: at most 3x)")
    raw_p50, our_p50 = ms(figures.raw_hops, 0.5), ms(figures.our_hops, 0.5)
    raw_p99, our_p99 = ms(figures.raw_hops, 0.99), ms(figures.our_hops, 0.99)
    print(f"\nhop, publish -> handled, {arguments.hops} events one at a time:")
    print(f"raw pyee:  p50 {raw_p50:.4f} ms  p99 {raw_p99:.4f} ms")
    print(f"seams:     p50 {our_p50:.4f} ms  p99 {our_p99:.4f} ms")
    print(f"seams / raw: p50 {our_p50 / raw_p50:.2f}x  p99 {our_p99 / raw_p99:.2f}x")
    print(f"seams, {arguments.events} events at once on that bus: {figures.rate:,.0f} events/s")
    if arguments.record:
        written = record(
            Hop(
                transport="in_process",
                p50_ms=our_p50,
                p99_ms=our_p99,
                events_per_second=figures.rate,
                events=arguments.hops,
                handler="no-op",
                baseline=Baseline("raw pyee emit", raw_p50, raw_p99, 1 / raw),
            )
        )
        print(f"recorded in {written.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
