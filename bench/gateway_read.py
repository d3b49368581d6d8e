"""GET /api/users/{id} through Seams' whole gateway, divided by the bare read, in one run,
under each ASGI server asked for.

    python bench/gateway_read.py [--seconds S] [--connections C] [--server uvicorn,granian]
                                 [--generator auto|wrk|python]

Seams (`python -m app`, one worker, every middleware and hook of the gateway,
authentication on, APP_RATE_LIMIT_PER_MINUTE=0) writes a few users into a fresh data dir
and logs one of them in. Then, round after round, for each server (APP_SERVER=uvicorn:
uvloop and httptools; APP_SERVER=granian: granian's embedded server on uvloop) bare then
seams, one server at a time is started pinned to core 0 (`taskset -c 0`) and loaded by wrk
pinned to core 1 (`taskset -c 1 wrk -t1 -cC -dSs --latency`) reading that user's row.
Seams is read as that user (`-H "Authorization: Bearer <token>"`:
docs/decisions/0016-benchmarks.md, "Seams runs with its whole gateway (auth on)"); the bare
side is bench/bare_read.py under the same server, unauthenticated (no middleware, same row,
same file, same driver). The best of the two rounds of each side is reported, with the ratio
seams/bare per server, and each side's granian/uvicorn ratio. Without wrk on PATH a built-in
Python load generator (asyncio sockets, keep-alive, its own process pinned to core 1) stands
in, and the output says so.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing
import multiprocessing.queues
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from harness import (
    BENCH,
    HOST,
    SERVERS,
    Server,
    commit,
    free_port,
    machine,
    percentile,
    pin_prefix,
    pin_self,
    register_users,
    start_seams,
)

Side = Literal["bare", "seams"]
SERVER_CORE = 0
LOAD_CORE = 1
ROUNDS = 2
SIDES: tuple[Side, ...] = ("bare", "seams")  # alternated, bare first, each round


@dataclass(frozen=True)
class Load:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx answers plus socket errors


# wrk


def wrk_version() -> str:
    completed = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    first = (completed.stdout or completed.stderr).strip().splitlines()
    return first[0].split(" [")[0] if first else "wrk"


def _duration_ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def parse_wrk(output: str) -> Load:
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.MULTILINE)
    if rate is None or p50 is None or p99 is None:
        raise RuntimeError(f"could not read wrk's output:\n{output}")
    errors = 0
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if non_2xx is not None:
        errors += int(non_2xx.group(1))
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if sockets is not None:
        errors += sum(int(count) for count in sockets.groups())
    return Load(
        float(rate.group(1)), _duration_ms(p50.group(1)), _duration_ms(p99.group(1)), errors
    )


def run_wrk(
    url: str, *, headers: Mapping[str, str], connections: int, seconds: int, warmup: int
) -> Load:
    command = [*pin_prefix(LOAD_CORE), "wrk", "-t1", f"-c{connections}"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    if warmup > 0:
        subprocess.run([*command, f"-d{warmup}s", url], capture_output=True, check=True)
    completed = subprocess.run(
        [*command, f"-d{seconds}s", "--latency", url], capture_output=True, text=True, check=True
    )
    return parse_wrk(completed.stdout)


# The built-in load generator: a separate process, keep-alive, one request in flight per
# connection, like wrk -t1 but with Python's per-request cost on the load core.


async def _hammer(
    port: int,
    path: str,
    headers: Mapping[str, str],
    connections: int,
    seconds: float,
    warmup: float,
) -> Load:
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    request = f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n{extra}\r\n".encode()
    latencies: list[float] = []
    failures = 0
    measure_from = time.perf_counter() + warmup
    end = measure_from + seconds

    async def one_connection() -> None:
        nonlocal failures
        while time.perf_counter() < end:
            try:
                reader, writer = await asyncio.open_connection(HOST, port)
            except OSError:
                failures += 1
                await asyncio.sleep(0.01)
                continue
            try:
                while (sent := time.perf_counter()) < end:
                    writer.write(request)
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
                    if length is None:
                        raise ValueError("no content-length")
                    await reader.readexactly(int(length.group(1)))
                    if sent >= measure_from:
                        latencies.append(time.perf_counter() - sent)
                        if not head.startswith((b"HTTP/1.1 2", b"HTTP/1.0 2")):
                            failures += 1
            except (OSError, ValueError, asyncio.IncompleteReadError):
                if time.perf_counter() >= measure_from:
                    failures += 1
            finally:
                writer.close()

    await asyncio.gather(*(one_connection() for _ in range(connections)))
    return Load(
        len(latencies) / seconds,
        percentile(latencies, 0.5) * 1000,
        percentile(latencies, 0.99) * 1000,
        failures,
    )


def _python_load_process(
    port: int,
    path: str,
    headers: dict[str, str],
    connections: int,
    seconds: float,
    warmup: float,
    results: multiprocessing.queues.Queue[Load],
) -> None:
    pin_self(LOAD_CORE)
    try:
        import uvloop

        load = uvloop.run(_hammer(port, path, headers, connections, seconds, warmup))
    except ImportError:
        load = asyncio.run(_hammer(port, path, headers, connections, seconds, warmup))
    results.put(load)


def run_python_load(
    port: int,
    path: str,
    *,
    headers: Mapping[str, str],
    connections: int,
    seconds: int,
    warmup: int,
) -> Load:
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.queues.Queue[Load] = context.Queue()
    process = context.Process(
        target=_python_load_process,
        args=(port, path, dict(headers), connections, float(seconds), float(warmup), results),
    )
    process.start()
    load = results.get(timeout=seconds + warmup + 60)
    process.join()
    return load


# The bare side, under either server.


def start_bare(users_db: Path, *, server: str, port: int, log_path: Path) -> Server:
    if server == "uvicorn":
        argv = [
            *pin_prefix(SERVER_CORE),
            sys.executable,
            "-m",
            "uvicorn",
            "bare_read:app",
            "--app-dir",
            str(BENCH),
            "--host",
            HOST,
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--workers",
            "1",
            "--no-access-log",
            "--log-level",
            "warning",
        ]
    else:  # granian's embedded server in one process, as APP_SERVER=granian serves Seams
        argv = [
            *pin_prefix(SERVER_CORE),
            sys.executable,
            str(BENCH / "bare_read.py"),
            "--host",
            HOST,
            "--port",
            str(port),
        ]
    env = {"BARE_USERS_DB": str(users_db)}
    return Server(f"bare ({server})", argv, port=port, log_path=log_path, env=env)


def parse_servers(text: str) -> list[str]:
    servers = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in servers if name not in SERVERS]
    if not servers or unknown:
        raise argparse.ArgumentTypeError(f"{text!r}: name one or more of {', '.join(SERVERS)}")
    return list(dict.fromkeys(servers))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python bench/gateway_read.py", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seconds", type=int, default=8, help="measured seconds per run (8)")
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections (64)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured seconds first (1)")
    parser.add_argument("--users", type=int, default=100, help="users in users.db (100)")
    parser.add_argument(
        "--server",
        type=parse_servers,
        default=list(SERVERS),
        help="ASGI servers to run both sides under, comma-separated (uvicorn,granian)",
    )
    parser.add_argument(
        "--generator",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="load generator: wrk if on PATH (auto), or the built-in Python one",
    )
    arguments = parser.parse_args(argv)
    servers: list[str] = arguments.server

    generator = arguments.generator
    if generator in ("auto", "wrk") and shutil.which("wrk") is None:
        print(
            "wrk is not on PATH: install it (`apt-get install wrk`) for figures comparable "
            "with bench/README.md. Falling back to the built-in Python load generator.",
            file=sys.stderr,
        )
        generator = "python"
    elif generator == "auto":
        generator = "wrk"
    if generator == "wrk":
        described = (
            f"{wrk_version()} -t1 -c{arguments.connections} -d{arguments.seconds}s --latency"
        )
    else:
        described = (
            f"built-in Python generator (asyncio sockets, uvloop, keep-alive), "
            f"{arguments.connections} connections, {arguments.seconds} s"
        )
    pinned = bool(pin_prefix(SERVER_CORE)) and bool(pin_prefix(LOAD_CORE))
    where = "servers on core 0, load on core 1" if pinned else "NOT pinned (no taskset/2 cores)"

    data = Path(tempfile.mkdtemp(prefix="seams-read-"))
    print(
        f"Gateway read benchmark: commit {commit()}, {machine()}\n"
        f"servers: {', '.join(server_versions(servers))}; 1 worker, uvloop\n"
        f"seams: APP_SERVER=<server> python -m app (whole gateway, auth on,"
        f" APP_RATE_LIMIT_PER_MINUTE=0); the read is authenticated (Bearer token)\n"
        f"bare:  bench/bare_read.py under the same server (uvicorn --loop uvloop --http"
        f" httptools; granian embedded), no middleware, no auth\n"
        f"load:  {described}, after a {arguments.warmup} s warm-up; {where}",
        flush=True,
    )
    try:
        # Seams writes the data both sides read.
        seams = start_seams(data / "db", port=free_port(), log_path=data / "setup.log")
        try:
            seams.wait_until("/ready")
            accounts = register_users(seams.base_url, arguments.users, tag=data.name)
        finally:
            seams.stop()
        # The token stays valid across restarts: the data dir keeps the signing key.
        reader = accounts[len(accounts) // 2]
        path = f"/api/users/{reader.id}"
        headers: dict[Side, dict[str, str]] = {"bare": {}, "seams": reader.headers}
        print(
            f"read:  GET {path} (one row of {len(accounts)} in {data / 'db' / 'users.db'});"
            f" seams as that user (Authorization: Bearer <its token>), bare without a header\n"
        )

        results: dict[tuple[str, Side], list[Load]] = {
            (server, side): [] for server in servers for side in SIDES
        }
        print(
            f"{'round':>5}  {'server':<7}  {'side':<5}  {'req/s':>8}  {'p50':>9}  {'p99':>9}"
            f"  {'errors':>6}"
        )
        for round_number in range(1, ROUNDS + 1):
            for server_name in servers:
                for side in SIDES:
                    port = free_port()
                    log_path = data / f"{side}-{server_name}-{round_number}.log"
                    if side == "bare":
                        server = start_bare(
                            data / "db" / "users.db",
                            server=server_name,
                            port=port,
                            log_path=log_path,
                        )
                    else:
                        server = start_seams(
                            data / "db",
                            port=port,
                            log_path=log_path,
                            pin_core=SERVER_CORE,
                            server=server_name,
                        )
                    try:
                        server.wait_until(path, headers=headers[side])
                        if generator == "wrk":
                            load = run_wrk(
                                server.base_url + path,
                                headers=headers[side],
                                connections=arguments.connections,
                                seconds=arguments.seconds,
                                warmup=arguments.warmup,
                            )
                        else:
                            load = run_python_load(
                                port,
                                path,
                                headers=headers[side],
                                connections=arguments.connections,
                                seconds=arguments.seconds,
                                warmup=arguments.warmup,
                            )
                    finally:
                        server.stop()
                    results[server_name, side].append(load)
                    print(
                        f"{round_number:>5}  {server_name:<7}  {side:<5}  "
                        f"{load.requests_per_second:>8.0f}  {load.p50_ms:>6.2f} ms  "
                        f"{load.p99_ms:>6.2f} ms  {load.errors:>6}",
                        flush=True,
                    )
    finally:
        shutil.rmtree(data, ignore_errors=True)

    best = {
        key: max(loads, key=lambda load: load.requests_per_second) for key, loads in results.items()
    }
    print()
    for server_name in servers:
        for side in SIDES:
            load = best[server_name, side]
            print(
                f"best {server_name:<7} {side:<5}: {load.requests_per_second:>8.0f} req/s, "
                f"p99 {load.p99_ms:.2f} ms"
            )
    for server_name in servers:
        ratio = _ratio(best[server_name, "seams"], best[server_name, "bare"])
        print(f"seams/bare under {server_name}: {ratio:.2f} (goal: >= 0.70)")
    if "uvicorn" in servers and "granian" in servers:
        for side in SIDES:
            ratio = _ratio(best["granian", side], best["uvicorn", side])
            print(f"granian/uvicorn, {side}: {ratio:.2f}")
    errors = sum(load.errors for loads in results.values() for load in loads)
    if errors:
        print(f"errors: {errors} non-2xx answers or socket errors; the figures are suspect")
    return 1 if errors else 0


def _ratio(numerator: Load, denominator: Load) -> float:
    if denominator.requests_per_second <= 0:
        return math.nan
    return numerator.requests_per_second / denominator.requests_per_second


def server_versions(servers: Sequence[str]) -> list[str]:
    """Each server with the version installed, e.g. `uvicorn 0.54.0`."""
    from importlib.metadata import PackageNotFoundError, version

    named = []
    for server in servers:
        try:
            named.append(f"{server} {version(server)}")
        except PackageNotFoundError:
            named.append(f"{server} (not installed)")
    return named


if __name__ == "__main__":
    sys.exit(main())
