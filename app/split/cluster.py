"""`python -m app cluster`: the split topology on this machine, one command.

The gateway and one process per module (plus replicas) run as child processes on loopback
under honcho (Foreman's model: each output line prefixed by its process; Ctrl-C or SIGTERM
stops them all; and when one exits, the others are stopped too, so a crash is seen rather
than left half-running). Without a NATS URL a private `nats-server -js` is started first
(its data and log under the data dir) and stopped last, once every process has let go.

`plan()` says what runs, with which command line and environment; the split-mode tests
and benchmarks start the same plan themselves, so that they can kill one process of it.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from app.kernel.data_dir import make_private_file
from app.kernel.settings import Settings

NATS_HINT = (
    "no nats-server on PATH: install it (Debian/Ubuntu: apt-get install nats-server; or a "
    "release from https://github.com/nats-io/nats-server/releases) or point at a running "
    "one with --nats-url nats://HOST:PORT (APP_BUS_URL)"
)


class ClusterError(ValueError):
    pass


@dataclass(frozen=True)
class Child:
    name: str  # gateway, nats, a module, or a module's second replica (<module>.2)
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # on top of the parent's environment
    port: int | None = None


@dataclass(frozen=True)
class Plan:
    children: list[Child]  # the gateway and the module processes, under honcho
    nats_url: str
    gateway_url: str
    nats: Child | None = None  # a private broker: up before the others, down after them
    nats_log: Path | None = None


def parse_replicas(specs: Sequence[str], modules: Sequence[str]) -> dict[str, int]:
    """`<module>=3` (repeatable, or comma-separated) → {"<module>": 3}; 1 for the rest."""
    counts = dict.fromkeys(modules, 1)
    for spec in (part for text in specs for part in text.split(",") if part.strip()):
        name, _, number = spec.partition("=")
        name = name.strip()
        if name not in counts:
            raise ClusterError(
                f"--replicas {spec}: {name!r} is not a module ({', '.join(modules)})"
            )
        try:
            counts[name] = int(number)
        except ValueError:
            raise ClusterError(f"--replicas {spec}: expected MODULE=N, e.g. {name}=3") from None
        if not 1 <= counts[name] <= 16:
            raise ClusterError(f"--replicas {spec}: between 1 and 16 replicas")
    return counts


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def plan(
    settings: Settings,
    modules: Sequence[str],
    *,
    replicas: Mapping[str, int],
    nats_url: str | None,
    secret_key: str,
    nats_server: str | None = None,
    python: str = sys.executable,
) -> Plan:
    """The processes of the split on loopback: the gateway on APP_PORT, modules on the next
    ports (one per replica), and a private nats-server when no URL is given."""
    shared = [python, "-m", "app"]
    if settings.ephemeral:
        shared.append("--ephemeral")
        many = [name for name, count in replicas.items() if count > 1]
        replicated_in_memory = [m for m in many if not getattr(settings, f"{m}_db_url")]
        if replicated_in_memory:
            raise ClusterError(
                f"--replicas {','.join(replicated_in_memory)} with --ephemeral: replicas of a "
                "module share its store, and an in-memory store lives in one process. Use a "
                "data dir, or a server store (e.g. APP_PAYMENTS_DB_URL=postgresql+asyncpg://…)"
            )
    else:
        shared += ["--data-dir", str(Path(settings.data_dir).expanduser().resolve())]
    children: list[Child] = []
    nats: Child | None = None
    nats_log: Path | None = None
    if nats_url is None:
        binary = nats_server or shutil.which("nats-server")
        if binary is None:
            raise ClusterError(NATS_HINT)
        nats_port = free_port()
        nats_url = f"nats://127.0.0.1:{nats_port}"
        argv = [binary, "-js", "-a", "127.0.0.1", "-p", str(nats_port)]
        if not settings.ephemeral:
            data = Path(settings.data_dir).expanduser().resolve()
            argv += ["-sd", str(data / "nats")]
            nats_log = data / "nats-server.log"
        else:
            argv += ["-sd", tempfile.mkdtemp(prefix="seams-nats-")]
        nats = Child("nats", argv, port=nats_port)
    env = {"APP_BUS_URL": nats_url, "APP_SECRET_KEY": secret_key, "APP_HOST": "127.0.0.1"}
    # A module process hears only the gateway, whose proof names the client: no
    # X-Forwarded-For is believed there, whatever proxies the gateway trusts.
    module_env = {**env, "APP_TRUSTED_PROXIES": ""}
    port = settings.port
    children.append(Child("gateway", [*shared, "gateway", "--port", str(port)], env, port))
    for module in modules:
        for replica in range(1, replicas.get(module, 1) + 1):
            port += 1
            name = module if replicas.get(module, 1) == 1 else f"{module}.{replica}"
            argv = [*shared, "--modules", module, "--port", str(port)]
            children.append(Child(name, argv, module_env, port))
    return Plan(children, nats_url, f"http://127.0.0.1:{settings.port}", nats, nats_log)


def run(the_plan: Plan) -> int:
    """Run the plan under honcho until Ctrl-C, SIGTERM or a child's exit; honcho's code."""
    from honcho.manager import Manager
    from honcho.printer import Printer

    broker = start_nats(the_plan) if the_plan.nats is not None else None
    try:
        manager = Manager(Printer(sys.stdout, colour=sys.stdout.isatty(), prefix=True))
        for child in the_plan.children:
            # exec: the signal honcho sends reaches the server itself, not a shell around it.
            manager.add_process(
                child.name,
                "exec " + shlex.join(child.argv),
                env={**os.environ, **child.env},
                cwd=os.getcwd(),
            )
        where = f", its log in {the_plan.nats_log}" if the_plan.nats_log else ""
        print(
            f"cluster: gateway on {the_plan.gateway_url}; broker {the_plan.nats_url}{where}; "
            f"{len(the_plan.children)} processes; Ctrl-C stops them all",
            flush=True,
        )
        manager.loop()
        return int(manager.returncode or 0)
    finally:
        if broker is not None:
            stop_nats(broker)


def start_nats(the_plan: Plan, timeout: float = 10.0) -> subprocess.Popen[bytes]:
    """The private broker, ready before any process that needs it starts."""
    assert the_plan.nats is not None and the_plan.nats.port is not None
    log: int = subprocess.DEVNULL
    if the_plan.nats_log is not None:
        make_private_file(the_plan.nats_log)  # 0600 in a 0700 dir, like every store file
        log = os.open(the_plan.nats_log, os.O_WRONLY | os.O_APPEND)
    # Its own session: a Ctrl-C sent to the terminal's process group must not stop the broker
    # before the processes that still flush to it. umask 077: its JetStream files hold every
    # event (personal data included), so they are the owner's alone.
    try:
        process = subprocess.Popen(
            the_plan.nats.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            umask=0o077,
        )
    finally:
        if log != subprocess.DEVNULL:
            os.close(log)  # the child has its own copy
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ClusterError(f"nats-server exited at once (status {process.returncode})")
        try:
            socket.create_connection(("127.0.0.1", the_plan.nats.port), timeout=0.5).close()
            return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise ClusterError(f"nats-server did not listen on {the_plan.nats_url} within {timeout}s")


def stop_nats(process: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
