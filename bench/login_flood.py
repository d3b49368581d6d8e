"""A flood of logins with made-up emails against the real argon2id parameters, while a real
user logs in from another address: how long the real user's logins take, and how fast the
flood is answered.

    python bench/login_flood.py [--attempts 300] [--in-flight 64] [--attackers 1] [--port P]

Seams runs as a process on loopback with `APP_PASSWORD_HASHING=argon2id` (the default hash,
not the cheap benchmark one). The flood comes from `--attackers` loopback addresses
(127.0.1.1, 127.0.1.2, …) and the real user from 127.0.2.1, so the server sees different
clients. The flood runs in a process of its own; the real user logs in once a quarter
second for as long as it lasts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
from harness import HOST, PASSWORD, SEAMS_ENV, Server, commit, free_port, machine, percentile

REAL_USER_ADDRESS = "127.0.2.1"


def client_from(base_url: str, address: str) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(local_address=address, limits=httpx.Limits())
    return httpx.AsyncClient(base_url=base_url, transport=transport, timeout=60.0)


async def log_in(client: httpx.AsyncClient, email: str, password: str) -> tuple[int, float]:
    started = time.perf_counter()
    answer = await client.post("/api/auth/token", json={"email": email, "password": password})
    return answer.status_code, time.perf_counter() - started


async def flood(base_url: str, attempts: int, in_flight: int, attackers: int) -> None:
    """The attacker's side (its own process): print what it got back."""
    clients = [client_from(base_url, f"127.0.1.{n + 1}") for n in range(attackers)]
    slots = asyncio.Semaphore(in_flight)
    answers: Counter[int] = Counter()
    refusals: list[float] = []

    async def guess(number: int) -> None:
        async with slots:
            status, seconds = await log_in(
                clients[number % attackers], f"{uuid.uuid4().hex}@example.com", "guess"
            )
            answers[status] += 1
            if status in (429, 503):
                refusals.append(seconds)

    started = time.perf_counter()
    await asyncio.gather(*(guess(number) for number in range(attempts)))
    elapsed = time.perf_counter() - started
    for client in clients:
        await client.aclose()
    print(
        f"flood: {attempts} attempts, {in_flight} in flight from {attackers} address(es): "
        f"{dict(answers)} in {elapsed:.2f} s; 429/503 answered in median "
        f"{percentile(refusals, 0.5) * 1000:.1f} ms, p99 {percentile(refusals, 0.99) * 1000:.1f} ms"
    )


async def measure(base_url: str, attempts: int, in_flight: int, attackers: int) -> None:
    email = f"real.{uuid.uuid4().hex[:8]}@example.com"
    async with client_from(base_url, REAL_USER_ADDRESS) as real:
        registered = await real.post(
            "/api/users", json={"name": "Real", "email": email, "password": PASSWORD}
        )
        assert registered.status_code == 201, registered.text
        quiet = [await log_in(real, email, PASSWORD) for _ in range(5)]
        statuses, median = [status for status, _ in quiet], percentile([s for _, s in quiet], 0.5)
        print(f"real login, no flood:   {statuses} median {median:.3f} s")

        attacker = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--flood-only",
            base_url,
            *("--attempts", str(attempts), "--in-flight", str(in_flight)),
            *("--attackers", str(attackers)),
        )
        during: list[tuple[int, float]] = []
        await asyncio.sleep(0.3)  # the attacker's process is up and flooding
        while attacker.returncode is None:
            during.append(await log_in(real, email, PASSWORD))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(attacker.wait(), 0.25)

    seconds = [s for _, s in during]
    print(
        f"real login, under flood: {dict(Counter(status for status, _ in during))} "
        f"median {percentile(seconds, 0.5):.3f} s, max {max(seconds, default=math.nan):.3f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attempts", type=int, default=300)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--attackers", type=int, default=1)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--flood-only", metavar="BASE_URL", help=argparse.SUPPRESS)
    parser.add_argument(
        "--hashing",
        choices=("argon2id", "argon2id-fast"),
        default="argon2id",
        help="APP_PASSWORD_HASHING (argon2id-fast: to see what the hashing itself costs)",
    )
    args = parser.parse_args()
    if args.flood_only:
        asyncio.run(flood(args.flood_only, args.attempts, args.in_flight, args.attackers))
        return

    print(f"login_flood @ {commit()}: {machine()}")
    port = args.port or free_port()
    with tempfile.TemporaryDirectory(prefix="seams-login-flood-") as data_dir:
        argv = [sys.executable, "-m", "app", "--port", str(port), "--data-dir", data_dir]
        server = Server(
            "seams",
            argv,
            port=port,
            log_path=Path(data_dir) / "server.log",
            env={**SEAMS_ENV, "APP_PASSWORD_HASHING": args.hashing},
        )
        try:
            server.wait_until("/ready")
            asyncio.run(
                measure(f"http://{HOST}:{port}", args.attempts, args.in_flight, args.attackers)
            )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
