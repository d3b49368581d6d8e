"""The price of the boundary: one event's hop in process and over NATS, then the same saga
load on the monolith and on the split, in one run, then the split with 1, 2 and 3 payments
replicas under a slow card.

    python bench/split.py [--orders 1000] [--concurrency 1,8,32] [--users 20] [--wait-saga]
                          [--replicas 1,2,3] [--replica-concurrency C] [--slow-seconds 0.25]
                          [--hops 2000] [--hops-only] [--record]

0. The hop: bench/bus.py's probe (a no-op consumer), `--hops` events published one at a
   time, each timed from its publish to its handler having run, then a burst for events/s:
   on the in-process transport, and on the NATS transport through a private `nats-server
   -js` (producer and consumer in this process, the broker on loopback: JetStream's store
   and ack, the consumer's pull, as a module process meets them). `--record` writes the NATS
   figures, with the in-process ones of this run as the baseline, into
   app/gateway/benchmarks.json for the live page (bench/record.py). `--hops-only` stops here.

1. The monolith: `python -m app` on a fresh data dir (bench/saga.py's server, start_seams).
2. The split: the processes `python -m app cluster` runs (app.split.cluster.plan: the gateway, one
   process per module, a private `nats-server -js`), on a fresh data dir, started here one by
   one so that the payments replicas can be chosen.
Both get bench/saga.py's load, through its own functions: an admin created on the data dir
before the start, users registered and logged in, one warm-up order per user, then per level
N orders paid with tok_visa from C concurrent clients (clients wait for the 201 only), each
saga timed from its POST to the poller first seeing its payment_succeeded notification.
After its levels, the split gets `--light-orders` more, one at a time (each waits for its
notification: light load), and each hop of the saga over NATS is printed: publish -> handled
p50/p99 per event and consumer, as the gateway's watch saw them (its replay, the last
APP_WATCH_REPLAY observations).
3. The replicas: the split again (fresh data dir each time) with payments in 1, 2, 3
   processes, orders paid with tok_slow (APP_SLOW_CARD_SECONDS), one level.

Every process is stopped with SIGTERM at the end of its part and must exit 0 (nats-server
gets SIGINT and exits 0; 1, its status after a graceful SIGTERM, is taken as clean too).
The exit status is 1 when an order failed, a saga never completed or a process did not
stop cleanly. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import bus
import httpx
import saga
from harness import (
    HOST,
    REPO,
    SEAMS_ENV,
    Account,
    Server,
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
from record import Baseline, Hop, record
from saga import POLL_INTERVAL, Level, Poller, event_loop_runner, parse_levels, run_level, warm_up

from app.bus import Bus, DeliveryStore, RetryPolicy
from app.bus.watch import HANDLED
from app.gateway.secrets import resolve_secret_key
from app.kernel.settings import Settings
from app.split.cluster import Child, ClusterError, Plan, plan, start_nats, stop_nats

MODULES = ("users", "orders", "payments", "notifications")
READY_SECONDS = 60.0
STOP_SECONDS = 20.0
NATS_CLEAN = (0, 1)  # stop_nats sends SIGINT (then 0); 2.9 exits 1 after a graceful SIGTERM


@dataclass(frozen=True)
class Load:
    """What every part gets: bench/saga.py's load."""

    users: int
    orders: int  # per level
    closed_loop: bool  # --wait-saga: each client waits for its saga before its next POST
    light_orders: int = 0  # then, one at a time, for the hops at light load (0: none)


@dataclass
class Row:
    """One level's figures for one system."""

    mode: str
    concurrency: int
    done: int
    rate: float  # completed sagas / s
    p50: float  # saga latency, s
    p99: float
    errors: int
    cpu: float | None  # CPU s of every process of the system during the level


@dataclass
class Stopped:
    name: str
    code: int
    clean: bool
    log_errors: int  # ERROR / Traceback lines in its log


# (event type, consumer) -> publish -> handled, ms, as the gateway's watch saw each hop
Hops = dict[tuple[str, str], list[float]]


@dataclass
class Part:
    hops: Hops = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    stopped: list[Stopped] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.problems) or any(not s.clean for s in self.stopped)


class System:
    """Seams running as real processes on loopback, behind one URL."""

    base_url: str

    def pids(self) -> list[int]:
        raise NotImplementedError

    def stop(self) -> list[Stopped]:
        raise NotImplementedError


def _stopped(server: Server) -> Stopped:
    """SIGTERM, and a clean exit is 0 (harness.Server.stop kills only after STOP_SECONDS)."""
    code = server.stop(STOP_SECONDS)
    log = server.log_path.read_text(errors="replace").splitlines()
    errors = sum(1 for line in log if "ERROR" in line or "Traceback" in line)
    return Stopped(server.name, code, code == 0, errors)


class Monolith(System):
    def __init__(self, data: Path) -> None:
        port = free_port()
        self.server = start_seams(data / "db", port=port, log_path=data / "monolith.log")
        self.base_url = self.server.base_url
        self.server.wait_until("/ready", timeout=READY_SECONDS)

    def pids(self) -> list[int]:
        return [self.server.process.pid]

    def stop(self) -> list[Stopped]:
        return [_stopped(self.server)]


class Split(System):
    """What `python -m app cluster` runs (the same plan), each child started here: the
    private broker first, then the gateway and the module processes. Stopped gateway first,
    then the modules, the broker last (as the cluster does)."""

    def __init__(self, data: Path, *, payments: int, env: dict[str, str]) -> None:
        settings = Settings.from_env({}, data_dir=str(data / "db"), port=_free_port_run(1 + 16))
        # The key create-admin generated into the data dir: every process signs and checks
        # tokens with it, as `python -m app cluster` arranges.
        self.plan: Plan = plan(
            settings,
            MODULES,
            replicas={"payments": payments},
            nats_url=None,
            secret_key=resolve_secret_key(settings),
        )
        self.base_url = self.plan.gateway_url
        self.servers: list[Server] = []
        self.nats = start_nats(self.plan)
        try:
            for child in self.plan.children:
                self.servers.append(self._start(child, data, env))
            for server in self.servers[1:]:  # module processes: their stores and bus are up
                server.wait_until("/ready", timeout=READY_SECONDS)
            self.servers[0].wait_until("/ready", timeout=READY_SECONDS)  # every module found
        except BaseException:
            self.stop()
            raise

    @staticmethod
    def _start(child: Child, data: Path, env: dict[str, str]) -> Server:
        assert child.port is not None
        return Server(
            child.name,
            child.argv,
            port=child.port,
            log_path=data / f"{child.name}.log",
            env={**SEAMS_ENV, **env, **child.env},
        )

    def pids(self) -> list[int]:
        return [*(server.process.pid for server in self.servers), self.nats.pid]

    def stop(self) -> list[Stopped]:
        """SIGTERM to each, in that order; the broker's status is checked against NATS_CLEAN."""
        stopped = [_stopped(server) for server in self.servers]
        stop_nats(self.nats, STOP_SECONDS)
        code = self.nats.returncode
        nats_log = self.plan.nats_log
        text = nats_log.read_text(errors="replace") if nats_log and nats_log.exists() else ""
        errors = sum(1 for line in text.splitlines() if "[ERR]" in line or "[FTL]" in line)
        stopped.append(Stopped("nats", code, code in NATS_CLEAN, errors))
        return stopped


def _free_port_run(count: int) -> int:
    """A free port with the next count-1 free too: the plan puts the modules on port+1, …"""
    for _ in range(100):
        base = free_port()
        if base + count >= 65_535:
            continue
        if all(_port_free(base + offset) for offset in range(1, count)):
            return base
    raise RuntimeError(f"no run of {count} free ports on {HOST}")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
        return True


def total_cpu(pids: Sequence[int]) -> float | None:
    times = [cpu_seconds(pid) for pid in pids]
    return None if any(t is None for t in times) else sum(t for t in times if t is not None)


@contextmanager
def paying_with(token: str) -> Iterator[None]:
    """bench/saga.py's orders are paid with tok_visa; for the slow part its body builder is
    swapped for one that pays with `token`, so the load is otherwise its very own."""
    original = saga.order_body

    def body(number: int) -> dict[str, Any]:
        return {**original(number), "payment_token": token}

    saga.order_body = body
    try:
        yield
    finally:
        saga.order_body = original


def summarize(mode: str, level: Level, poller: Poller, cpu: float | None) -> Row:
    done = [placed for placed in level.placed if placed.order_id in poller.seen]
    sagas = [poller.seen[placed.order_id] - placed.sent for placed in done]
    wall = level.last_seen - level.first_sent
    return Row(
        mode=mode,
        concurrency=level.concurrency,
        done=len(done),
        rate=len(done) / wall if wall > 0 else 0.0,
        p50=percentile(sagas, 0.5),
        p99=percentile(sagas, 0.99),
        errors=len(level.errors) + len(level.missing),
        cpu=cpu,
    )


async def drive(
    system: System,
    mode: str,
    admin_token: str,
    users: Sequence[Account],
    load: Load,
    levels: Sequence[int],
    token: str,
    hops: Hops | None = None,
) -> tuple[list[Row], list[str]]:
    """bench/saga.py's warm-up and levels against one running system; with `hops`, then
    `load.light_orders` one at a time, and the hops the watch saw for them into `hops`."""
    poller = Poller(system.base_url, admin_token)
    polling = asyncio.create_task(poller.run())
    rows: list[Row] = []
    problems: list[str] = []
    try:
        warm = await warm_up(system.base_url, poller, users)
        print(f"  {mode}: warm-up, {len(users)} orders (one per user), {warm:.2f} s", flush=True)
        for concurrency in levels:
            before = total_cpu(system.pids())
            with paying_with(token):
                level = await run_level(
                    system.base_url,
                    poller,
                    users,
                    load.orders,
                    concurrency,
                    closed_loop=load.closed_loop,
                    server_pid=system.pids()[0],  # its figure is unused: total_cpu has all
                )
            after = total_cpu(system.pids())
            cpu = after - before if before is not None and after is not None else None
            rows.append(summarize(mode, level, poller, cpu))
            problems += [f"{mode} c={concurrency}: {error[:300]}" for error in level.errors[:3]]
            if level.missing:
                problems.append(f"{mode} c={concurrency}: {len(level.missing)} sagas never done")
        if hops is not None and load.light_orders:
            light_since = time.time() * 1000.0  # the watch's `at`: epoch ms
            await run_level(
                system.base_url,
                poller,
                users,
                load.light_orders,
                1,
                closed_loop=True,
                server_pid=system.pids()[0],
            )
            hops.update(await watched_hops(system.base_url, admin_token, since=light_since))
    finally:
        poller.stop()
        await polling
    if poller.errors:
        problems.append(f"{mode}: {poller.errors} poller requests failed")
    return rows, problems


async def watched_hops(base_url: str, admin_token: str, *, since: float) -> Hops:
    """The replay of the gateway's watch stream (as many observations as /api/watch/state
    says it keeps; live ones follow, endlessly): the hop_ms of each event handled at or
    after `since` (epoch ms), by event type and consumer."""
    hops: Hops = {}
    headers = {"Authorization": f"Bearer {admin_token}", "Accept": "text/event-stream"}
    async with httpx.AsyncClient(base_url=base_url, timeout=30.0, headers=headers) as client:
        replay = int((await client.get("/api/watch/state")).json()["replay"])
        async with client.stream("GET", "/api/watch/stream") as response:
            kind, read = "", 0
            async for line in response.aiter_lines():
                if read >= replay:
                    break
                if line.startswith("event:"):
                    kind = line.partition(":")[2].strip()
                elif line.startswith("data:"):
                    read += 1
                    seen = json.loads(line.partition(":")[2])
                    if kind == HANDLED and seen.get("hop_ms") is not None and seen["at"] >= since:
                        key = (seen["type"], seen["consumer"])
                        hops.setdefault(key, []).append(float(seen["hop_ms"]))
    return hops


def run_part(
    mode: str,
    data: Path,
    start: Callable[[Path], System],
    load: Load,
    *,
    levels: Sequence[int],
    token: str,
    hops: bool = False,
) -> Part:
    """A fresh data dir with an admin, the system started on it, loaded, stopped."""
    part = Part()
    try:
        admin_email = create_admin(data / "db")
        system = start(data)
    except (RuntimeError, ClusterError) as error:  # what failed is stopped already
        part.problems.append(f"{mode} did not start: {error}")
        return part
    try:
        with httpx.Client(base_url=system.base_url, timeout=30.0) as client:
            admin_token = log_in(client, admin_email)
        accounts = register_users(system.base_url, load.users, tag=f"{data.name}-{mode}")
        rows, problems = event_loop_runner()(
            drive(
                system,
                mode,
                admin_token,
                accounts,
                load,
                levels,
                token,
                part.hops if hops else None,
            )
        )
        part.rows += rows
        part.problems += problems
    except Exception as error:
        part.problems.append(f"{mode}: {error!r}")
    finally:
        part.stopped = system.stop()
    return part


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


def cpu_per_saga(row: Row) -> str:
    return "n/a" if row.cpu is None or not row.done else f"{row.cpu / row.done * 1000:.1f} ms"


def print_boundary(monolith: Part, split: Part) -> None:
    print("\nmode       concurrency  sagas/s   saga p50   saga p99  errors  CPU per saga")
    for row in [*monolith.rows, *split.rows]:
        print(
            f"{row.mode:<10} {row.concurrency:>11}  {row.rate:>7.1f}  {ms(row.p50):>9}"
            f"  {ms(row.p99):>9}  {row.errors:>6}  {cpu_per_saga(row)}"
        )
    print("\nsplit / monolith  concurrency  sagas/s   saga p50   saga p99  CPU per saga")
    by_level = {row.concurrency: row for row in monolith.rows}
    for row in split.rows:
        base = by_level.get(row.concurrency)
        if base is None or not base.rate:
            continue
        cpu = (
            f"{(row.cpu / row.done) / (base.cpu / base.done):.2f}x"
            if row.cpu is not None and base.cpu and row.done and base.done
            else "n/a"
        )
        print(
            f"{'':<16}  {row.concurrency:>11}  {row.rate / base.rate:>6.2f}x"
            f"  {row.p50 / base.p50:>8.2f}x  {row.p99 / base.p99:>8.2f}x  {cpu:>12}"
        )


def print_saga_hops(hops: Hops, orders: int) -> None:
    print(
        f"\nsplit, {orders} orders one at a time: each hop over NATS, publish -> handled"
        "\n(the gateway's watch: its replay of the last observations)"
    )
    print(f"{'event':<20} {'consumer':<15} {'hops':>5}  {'p50':>9}  {'p99':>9}")
    for (event, consumer), times in sorted(hops.items()):
        p50, p99 = (percentile([t / 1000 for t in times], q) * 1000 for q in (0.5, 0.99))
        print(f"{event:<20} {consumer:<15} {len(times):>5}  {p50:>6.2f} ms  {p99:>6.2f} ms")


def print_replicas(parts: dict[int, Part], slow: float) -> None:
    print(
        "\npayments replicas  concurrency  sagas/s  vs 1 replica   saga p50   saga p99  errors"
        "  CPU per saga"
    )
    first = parts[min(parts)]
    base = first.rows[0].rate if first.rows else 0.0
    for count, part in parts.items():
        for row in part.rows:
            ratio = f"{row.rate / base:.2f}x" if base else "n/a"
            print(
                f"{count:>17}  {row.concurrency:>11}  {row.rate:>7.1f}  {ratio:>12}"
                f"  {ms(row.p50):>9}  {ms(row.p99):>9}  {row.errors:>6}  {cpu_per_saga(row)}"
            )
    print(f"(tok_slow: each charge sleeps {slow:g} s in the payments process)")


def print_stops(parts: dict[str, Part]) -> None:
    for label, part in parts.items():
        states = ", ".join(
            f"{s.name} {s.code}{'' if s.clean else ' NOT clean'}"
            + (f" ({s.log_errors} error lines)" if s.log_errors else "")
            for s in part.stopped
        )
        print(f"stopped ({label}): {states or 'nothing was running'}")
        for problem in part.problems:
            print(f"  problem: {problem}")


@dataclass(frozen=True)
class HopRun:
    transport: str
    hops: list[float]  # s, publish -> handled, one at a time
    rate: float  # events/s, a burst

    def ms(self, fraction: float) -> float:
        return percentile(self.hops, fraction) * 1000


def nats_bus(url: str) -> Bus:
    from app.split.nats_transport import NatsTransport

    return Bus(
        NatsTransport(url, stream="BENCH_HOPS", subject_prefix="bench.hops"),
        retry=RetryPolicy(max_attempts=1),
        store=DeliveryStore("sqlite+aiosqlite:///:memory:"),
    )


def run_hops(data: Path, hops: int, burst: int) -> tuple[HopRun, HopRun]:
    """The hop in process, then over NATS through a private broker, in this run."""
    runner = event_loop_runner()
    in_process = HopRun(
        "in_process", *runner(bus.seams_hop_figures(bus.in_process_bus(), hops, burst))
    )
    settings = Settings.from_env({}, data_dir=str(data / "db"), port=free_port())
    broker_plan = plan(settings, (), replicas={}, nats_url=None, secret_key="unused: no process")
    broker = start_nats(broker_plan)
    try:
        over_nats = HopRun(
            "nats", *runner(bus.seams_hop_figures(nats_bus(broker_plan.nats_url), hops, burst))
        )
    finally:
        stop_nats(broker, STOP_SECONDS)
    return in_process, over_nats


def print_hops(in_process: HopRun, over_nats: HopRun) -> None:
    print("\nhop (publish -> handled, no-op consumer)  p50        p99        events/s")
    for run in (in_process, over_nats):
        print(
            f"{run.transport:<40}  {run.ms(0.5):>7.3f} ms {run.ms(0.99):>7.3f} ms"
            f"  {run.rate:>9,.0f}"
        )
    p50, p99 = over_nats.ms(0.5) / in_process.ms(0.5), over_nats.ms(0.99) / in_process.ms(0.99)
    rate = over_nats.rate / in_process.rate
    print(f"{'nats / in process':<40}  {p50:>8.1f}x  {p99:>8.1f}x  {rate:>8.2f}x")


def record_hops(in_process: HopRun, over_nats: HopRun) -> Path:
    return record(
        Hop(
            transport="nats",
            p50_ms=over_nats.ms(0.5),
            p99_ms=over_nats.ms(0.99),
            events_per_second=over_nats.rate,
            events=len(over_nats.hops),
            handler="no-op",
            baseline=Baseline(
                "in process, same run", in_process.ms(0.5), in_process.ms(0.99), in_process.rate
            ),
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python bench/split.py", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--orders", type=int, default=1000, help="orders per level (1000)")
    parser.add_argument(
        "--concurrency", type=parse_levels, default=[1, 8, 32], help="levels (1,8,32)"
    )
    parser.add_argument("--users", type=int, default=20, help="users the orders cycle over (20)")
    parser.add_argument(
        "--replicas", type=parse_levels, default=[1, 2, 3], help="payments replicas (1,2,3)"
    )
    parser.add_argument(
        "--replica-concurrency",
        type=int,
        default=0,
        help="clients in the replica part (default: the highest --concurrency level)",
    )
    parser.add_argument(
        "--slow-seconds",
        type=float,
        default=0.25,
        help="APP_SLOW_CARD_SECONDS in the replica part: how long a tok_slow charge takes (0.25)",
    )
    parser.add_argument(
        "--wait-saga",
        action="store_true",
        help="closed loop, as in bench/saga.py: each client waits for its order's notification "
        "before its next POST (default: clients only wait for the 201)",
    )
    parser.add_argument("--hops", type=int, default=2000, help="hops timed one by one (2000)")
    parser.add_argument(
        "--light-orders",
        type=int,
        default=50,
        help="split: orders placed one at a time after the levels, for each hop's figures (50)",
    )
    parser.add_argument(
        "--hops-only", action="store_true", help="measure the hop only, no saga parts"
    )
    parser.add_argument(
        "--record",
        action="store_true",
        help="write the hop over NATS into app/gateway/benchmarks.json (served to the page)",
    )
    arguments = parser.parse_args(argv)
    replica_level = arguments.replica_concurrency or max(arguments.concurrency)
    data = Path(tempfile.mkdtemp(prefix="seams-split-"))
    print(
        f"Seams split benchmark: commit {commit()}, {machine()}\n"
        f"monolith: python -m app (its default server, 1 worker); split: the plan of "
        f"python -m app cluster (gateway + users, orders, payments, notifications processes + "
        f"nats-server -js), each "
        f"on a fresh data dir under {data} (file-backed SQLite), APP_PASSWORD_HASHING="
        f"argon2id-fast, APP_LOG_LEVEL=WARNING, APP_RATE_LIMIT_PER_MINUTE=0; auth on\n"
        f"load (bench/saga.py's): {arguments.orders} orders per level, {arguments.users} users, "
        f"{'closed loop' if arguments.wait_saga else 'clients wait for the 201 only'}; "
        f"1 notifications poller (as an admin) every "
        f"{POLL_INTERVAL * 1000:.0f} ms; saga = POST sent -> payment_succeeded seen",
        flush=True,
    )
    load = Load(arguments.users, arguments.orders, arguments.wait_saga, arguments.light_orders)
    started = time.perf_counter()
    print(f"the hop, {arguments.hops} events one at a time, in process and over NATS", flush=True)
    try:
        in_process, over_nats = run_hops(data / "hop", arguments.hops, burst=5000)
    except ClusterError as error:
        print(f"the hop over NATS did not run: {error}")
        shutil.rmtree(data, ignore_errors=True)
        return 1
    print_hops(in_process, over_nats)
    if arguments.record:
        print(f"recorded in {record_hops(in_process, over_nats).relative_to(REPO)}")
    if arguments.hops_only:
        shutil.rmtree(data, ignore_errors=True)
        return 0
    parts: dict[str, Part] = {}
    replica_parts: dict[int, Part] = {}
    try:
        print(f"monolith, tok_visa, levels {arguments.concurrency}", flush=True)
        parts["monolith"] = run_part(
            "monolith",
            data / "monolith",
            Monolith,
            load,
            levels=arguments.concurrency,
            token="tok_visa",
        )
        print(f"split, tok_visa, levels {arguments.concurrency}", flush=True)
        parts["split"] = run_part(
            "split",
            data / "split",
            partial(Split, payments=1, env={}),
            load,
            levels=arguments.concurrency,
            token="tok_visa",
            hops=True,
        )
        slow_env = {"APP_SLOW_CARD_SECONDS": f"{arguments.slow_seconds:g}"}
        for count in arguments.replicas:
            print(f"split, payments={count}, tok_slow, c={replica_level}", flush=True)
            replica_parts[count] = parts[f"payments={count}"] = run_part(
                f"payments={count}",
                data / f"split-payments-{count}",
                partial(Split, payments=count, env=slow_env),
                load,
                levels=[replica_level],
                token="tok_slow",
            )
    finally:
        print(f"\n(all parts: {time.perf_counter() - started:.0f} s)")
        if "monolith" in parts and "split" in parts:
            print_boundary(parts["monolith"], parts["split"])
        if "split" in parts and parts["split"].hops:
            print_saga_hops(parts["split"].hops, arguments.light_orders)
        if any(part.rows for part in replica_parts.values()):
            print_replicas(replica_parts, arguments.slow_seconds)
        print()
        print_stops(parts)
        shutil.rmtree(data, ignore_errors=True)
    return 1 if any(part.failed for part in parts.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
