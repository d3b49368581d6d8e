"""Hosts that are really apart, on one machine: Linux network namespaces, each with its own
loopback and one veth pair to a bridge in the test's namespace, at its own address.

`hosts(["gateway", "users", …])` makes a bridge (10.X.Y.1/24, the test's own address on
it) and one namespace per name (10.X.Y.2, .3, …); `Hosts.run(name, argv)` starts a process
inside one. A process there reaches the others only at their bridge addresses: nothing can
lean on a shared 127.0.0.1. Everything is removed when the block ends, however it ends:
the processes in each namespace killed, the namespaces deleted (their veth ends with
them), the bridge deleted.

Needs root and `ip` (iproute2); without them the test skips with the reason, unless
SEAMS_REQUIRE_SERVICES=1 (CI), which fails it instead.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from tests.support.tiers import skip_or_fail

STOP_SECONDS = 15.0


@dataclass
class Host:
    name: str
    netns: str
    address: str
    veth: str  # its end on the bridge, in the test's namespace


@dataclass
class Started:
    host: Host
    process: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]

    def log_tail(self, lines: int = 40) -> str:
        self.log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Hosts:
    bridge: str
    gateway_address: str  # the test's own address on the bridge
    hosts: dict[str, Host]
    started: dict[str, Started] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def run(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        *,
        process_name: str | None = None,
    ) -> Started:
        """Start `argv` inside host `name`'s namespace (`ip netns exec` becomes the process:
        its pid is the program's); its output goes to `log_path`."""
        host = self.hosts[name]
        log = open(log_path, "ab")  # noqa: SIM115 - closed when the process is stopped
        process = subprocess.Popen(
            ["ip", "netns", "exec", host.netns, *argv],
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[2],
        )
        started = Started(host, process, log_path, log)
        self.started[process_name or name] = started
        return started

    def kill(self, process_name: str) -> None:
        """SIGKILL one process: its host is gone without a word."""
        started = self.started.pop(process_name)
        started.process.send_signal(signal.SIGKILL)
        started.process.wait(STOP_SECONDS)
        started.log.close()

    def logs(self) -> str:
        return "\n\n".join(f"--- {name}\n{s.log_tail()}" for name, s in self.started.items())

    def stop_all(self) -> None:
        for started in self.started.values():
            if started.process.poll() is None:
                started.process.terminate()
        for started in self.started.values():
            try:
                started.process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                started.process.kill()
                started.process.wait(STOP_SECONDS)
            started.log.close()


def namespaces_possible() -> str | None:
    """Why network namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "no `ip` command (apt-get install iproute2)"
    probe = f"seams-probe-{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot make a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


@contextmanager
def hosts(names: Sequence[str]) -> Iterator[Hosts]:
    """One namespace per name on a fresh bridge; all of it removed afterwards."""
    why = namespaces_possible()
    if why is not None:
        skip_or_fail(why)
    tag = uuid.uuid4().hex[:5]
    subnet = f"10.{random.randrange(200, 250)}.{random.randrange(1, 250)}"
    bridge = f"sbr{tag}"
    made: list[str] = []
    result = Hosts(bridge, f"{subnet}.1", {})
    try:
        _ip("link", "add", bridge, "type", "bridge")
        _ip("addr", "add", f"{subnet}.1/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        for number, name in enumerate(names, start=2):
            host = Host(name, f"seams-{tag}-{name}", f"{subnet}.{number}", f"sv{tag}{number}")
            _ip("netns", "add", host.netns)
            made.append(host.netns)
            inside = f"si{tag}{number}"
            _ip("link", "add", host.veth, "type", "veth", "peer", "name", inside)
            _ip("link", "set", inside, "netns", host.netns)
            _ip("link", "set", host.veth, "master", bridge, "up")
            _in(host.netns, "ip", "link", "set", "lo", "up")
            _in(host.netns, "ip", "addr", "add", f"{host.address}/24", "dev", inside)
            _in(host.netns, "ip", "link", "set", inside, "up")
            result.hosts[name] = host
        yield result
    finally:
        result.stop_all()
        for netns in made:
            _kill_inside(netns)
            subprocess.run(["ip", "netns", "del", netns], capture_output=True)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)


def _ip(*arguments: str) -> None:
    done = subprocess.run(["ip", *arguments], capture_output=True, text=True)
    if done.returncode != 0:
        raise AssertionError(f"ip {' '.join(arguments)}: {done.stderr.strip()}")


def _in(netns: str, *argv: str) -> None:
    _ip("netns", "exec", netns, *argv)


def _kill_inside(netns: str) -> None:
    """Whatever still runs in the namespace (a server a failed test left): SIGKILL."""
    pids = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True)
    for pid in pids.stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            continue
