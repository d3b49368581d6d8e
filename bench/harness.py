"""What bench/saga.py and bench/gateway_read.py share: the Seams server as a real process,
its first admin, users with their bearer tokens, free ports, percentiles and the machine
line every report starts with.

Not a module of the app: nothing here imports `app`. The benchmarks talk to Seams over
HTTP on loopback only, exactly as a client would.
"""

from __future__ import annotations

import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
HOST = "127.0.0.1"

# Every Seams process a benchmark starts gets these: cheap registration and login (argon2id
# with small parameters instead of the default 64 MiB / 3 passes, which cost tens of ms of
# CPU per user; the benchmarks measure orders and reads, not password hashing), quiet logs,
# and no per-caller rate limit (docs/decisions/0012-limits.md: benchmarks disable it; the
# default 6,000/min per caller would turn a load run into a run of 429s). Authentication stays on.
SEAMS_ENV = {
    "APP_PASSWORD_HASHING": "argon2id-fast",
    "APP_LOG_LEVEL": "WARNING",
    "APP_RATE_LIMIT_PER_MINUTE": "0",
}
PASSWORD = "correct horse battery staple"  # every benchmark account's, admin included
ADMIN_EMAIL = "bench-admin@example.com"


@dataclass(frozen=True)
class Account:
    """A user the benchmark can act as: its id and a bearer token from POST /api/auth/token."""

    id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (fraction in 0..1) of unsorted samples; nan when empty."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def commit() -> str:
    """The short commit of the repo, with '+dirty' when tracked files differ from it."""
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "diff", "--quiet", "HEAD", "--", "app"],
            capture_output=True,
            check=False,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty(app)" if dirty.returncode == 1 else "")


def machine() -> str:
    """Cores, OS, Python, and the 1-minute load average: on a shared machine, a run made
    while something else was busy says so."""
    cores = os.cpu_count() or 0
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return (
        f"{cores} cores, {platform.system()} {platform.machine()}, "
        f"Python {sys.version.split()[0]}{load}"
    )


def pin_prefix(core: int) -> list[str]:
    """`taskset -c <core>` when taskset exists and the machine has that core, else nothing."""
    if shutil.which("taskset") and (os.cpu_count() or 1) > core:
        return ["taskset", "-c", str(core)]
    return []


def pin_self(core: int) -> bool:
    """Pin the calling process to one core; False when that is not possible here."""
    try:
        if (os.cpu_count() or 1) > core:
            os.sched_setaffinity(0, {core})
            return True
    except (AttributeError, OSError):
        pass
    return False


class Server:
    """A server started as a child process on loopback, its output kept in a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        port: int,
        log_path: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.port = port
        self.base_url = f"http://{HOST}:{port}"
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            list(argv),
            cwd=REPO,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_until(
        self, path: str, *, timeout: float = 30.0, headers: Mapping[str, str] | None = None
    ) -> None:
        """Poll GET path (with these headers) until it answers 200; raise with the server's
        log if it never does."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        with httpx.Client(base_url=self.base_url, timeout=2.0, headers=headers) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}"
                    )
                try:
                    response = client.get(path)
                except httpx.TransportError as error:
                    last = repr(error)
                else:
                    if response.status_code == 200:
                        return
                    last = f"{response.status_code} {response.text[:200]}"
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"{self.name}: GET {path} never answered 200 ({last}):\n{self.log_tail()}"
        )

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then wait for a clean exit (SIGKILL only if it never comes)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                print(
                    f"{self.name} ignored SIGTERM for {timeout:.0f} s; killing it", file=sys.stderr
                )
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode

    def log_tail(self, lines: int = 30) -> str:
        if not self._log.closed:
            self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


SERVERS = ("uvicorn", "granian")  # what APP_SERVER accepts


def start_seams(
    data_dir: Path,
    *,
    port: int,
    log_path: Path,
    pin_core: int | None = None,
    server: str | None = None,
) -> Server:
    """`python -m app --data-dir <data_dir> --port <port>` with SEAMS_ENV (rate limit off,
    auth on), optionally pinned, under APP_SERVER=`server` (None: Seams' default)."""
    prefix = [] if pin_core is None else pin_prefix(pin_core)
    argv = [*prefix, sys.executable, "-m", "app", "--port", str(port), "--data-dir", str(data_dir)]
    env = dict(SEAMS_ENV) if server is None else {**SEAMS_ENV, "APP_SERVER": server}
    name = f"seams ({server})" if server else "seams"
    return Server(name, argv, port=port, log_path=log_path, env=env)


def create_admin(
    data_dir: Path,
    *,
    email: str = ADMIN_EMAIL,
    name: str = "Bench Admin",
    password: str = PASSWORD,
) -> str:
    """`python -m app create-admin --password-stdin` on the data dir, before the server is
    started on it (the server and this command must not hold its stores at once). The
    admin's email, for `log_in`."""
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "app",
            "create-admin",
            "--email",
            email,
            "--name",
            name,
            "--password-stdin",
            "--data-dir",
            str(data_dir),
        ],
        cwd=REPO,
        env={**os.environ, **SEAMS_ENV},
        input=password + "\n",
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"create-admin exited with {completed.returncode}:\n"
            f"{completed.stdout}{completed.stderr}"
        )
    return email


def log_in(client: httpx.Client, email: str, password: str = PASSWORD) -> str:
    """POST /api/auth/token on the client's base URL; the bearer token."""
    response = client.post("/api/auth/token", json={"email": email, "password": password})
    if response.status_code != 200:
        raise RuntimeError(
            f"POST /api/auth/token for {email} answered {response.status_code}: "
            f"{response.text[:300]}"
        )
    body = response.json()
    if body.get("token_type") != "bearer":
        raise RuntimeError(f"POST /api/auth/token: not a bearer token: {response.text[:300]}")
    token: str = body["access_token"]
    return token


def register_users(base_url: str, count: int, *, tag: str) -> list[Account]:
    """Register `count` users through the gateway and log each one in; their accounts (id
    and bearer token), in registration order."""
    accounts: list[Account] = []
    with httpx.Client(base_url=base_url, timeout=30.0) as client:
        for number in range(count):
            email = f"bench-{tag}-{number}@example.com"
            response = client.post(
                "/api/users",
                json={"name": f"Bench User {number}", "email": email, "password": PASSWORD},
            )
            if response.status_code != 201:
                raise RuntimeError(
                    f"POST /api/users answered {response.status_code}: {response.text[:300]}"
                )
            accounts.append(Account(response.json()["id"], log_in(client, email)))
    return accounts


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU a process (all its threads) has used so far; None off Linux."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "; fields[0] is state
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks
