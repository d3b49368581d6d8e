"""`python -m app cluster`: the split topology on this machine, one command.

The gateway and one process per module (plus replicas) run as child processes on loopback,
each output line prefixed by its process, in Foreman's shape (honcho's printer). Without a
NATS URL a private `nats-server -js` is started first (its data and log under the data dir)
and stopped last, once every process has let go; with `--brokers 3` (or 5) a JetStream
cluster of that many clustered servers instead, every process connecting to all of them and
the stream and consumers kept on each (docs/decisions/0033-broker-cluster-and-restarts.md).

The cluster supervises them: a process that dies (a module, a replica, the gateway or the
private broker) is started again after a backoff that doubles from 0.5 s up to 10 s, and
starts again from 0.5 s once the process stayed up 30 s; the others keep serving meanwhile.
`--exit-on-crash` stops everything at the first exit instead, for CI-style runs. SIGTERM or
SIGINT stops every child (SIGTERM, a grace period, SIGKILL only for one still running) and
never restarts one while stopping.

`plan()` says what runs, with which command line and environment; the split-mode tests
and benchmarks start the same plan themselves, so that they can kill one process of it.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import msgspec

from app.kernel.data_dir import make_private_file
from app.kernel.settings import Settings

NATS_HINT = (
    "no nats-server on PATH: install it (Debian/Ubuntu: apt-get install nats-server; or a "
    "release from https://github.com/nats-io/nats-server/releases) or point at a running "
    "one with --nats-url nats://HOST:PORT (APP_BUS_URL)"
)


BROKER_COUNTS = (1, 3, 5)  # a JetStream cluster keeps a quorum with one (or two) gone
CLUSTER_NAME = "seams"


class ClusterError(ValueError):
    pass


@dataclass(frozen=True)
class Child:
    name: str  # gateway, nats (nats.1… in a broker cluster), a module, or a replica (<module>.2)
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # on top of the parent's environment
    port: int | None = None
    log: Path | None = None  # a broker's: its output goes there, not to the cluster's
    monitor_port: int | None = None  # a clustered broker's HTTP monitoring (/jsz)


@dataclass(frozen=True)
class Plan:
    children: list[Child]  # the gateway and the module processes, supervised
    nats_url: str  # comma-separated: every server of a broker cluster
    gateway_url: str
    # Private brokers: up before the others, down after them (none with --nats-url).
    brokers: list[Child] = field(default_factory=list)

    @property
    def nats(self) -> Child | None:
        """The private broker (the first of a cluster's)."""
        return self.brokers[0] if self.brokers else None

    @property
    def nats_log(self) -> Path | None:
        return self.brokers[0].log if self.brokers else None


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
    brokers: int = 1,
) -> Plan:
    """The processes of the split on loopback: the gateway on APP_PORT, modules on the next
    ports (one per replica), and a private nats-server when no URL is given (`brokers` of
    them, clustered, when more than one), all keeping their files in the settings' data dir
    (for --ephemeral, a `throwaway_data_dir()`)."""
    if settings.ephemeral:
        raise ClusterError(
            "the plan needs a data dir: --ephemeral runs the cluster in a temporary one "
            "(throwaway_data_dir)"
        )
    if brokers not in BROKER_COUNTS:
        raise ClusterError(
            f"--brokers {brokers}: 1, 3 or 5 (a JetStream cluster needs a majority of its "
            "servers up: with 2, losing either stops it)"
        )
    data = Path(settings.data_dir).expanduser().resolve()
    shared = [python, "-m", "app", "--data-dir", str(data)]
    children: list[Child] = []
    broker_children: list[Child] = []
    if nats_url is None:
        binary = nats_server or shutil.which("nats-server")
        if binary is None:
            raise ClusterError(NATS_HINT)
        broker_children = broker_plan(binary, data, brokers)
        nats_url = ",".join(f"nats://127.0.0.1:{broker.port}" for broker in broker_children)
    elif brokers > 1:
        raise ClusterError(
            "--brokers starts private brokers; with --nats-url (or APP_BUS_URL) name every "
            "server of your JetStream cluster there, comma-separated, and set APP_NATS_REPLICAS"
        )
    # APP_EPHEMERAL=false: every process keeps its store in the data dir it is given, even
    # when the cluster's own environment says --ephemeral (the cluster made that dir for it).
    env = {
        "APP_BUS_URL": nats_url,
        "APP_SECRET_KEY": secret_key,
        "APP_HOST": "127.0.0.1",
        "APP_EPHEMERAL": "false",
    }
    if len(broker_children) > 1:  # the stream and consumers on every server (0033)
        env["APP_NATS_REPLICAS"] = str(len(broker_children))
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
    return Plan(children, nats_url, f"http://127.0.0.1:{settings.port}", broker_children)


def broker_plan(binary: str, data: Path, count: int) -> list[Child]:
    """One private `nats-server -js` ("nats", its store in <data>/nats), or `count` of them
    clustered ("nats.1"…, stores in <data>/nats/1…): each listens for clients, for its peers
    (routes to every other one) and for monitoring on its own loopback ports."""
    if count == 1:
        port = free_port()
        argv = [binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(data / "nats")]
        return [Child("nats", argv, port=port, log=data / "nats-server.log")]
    ports = [(free_port(), free_port(), free_port()) for _ in range(count)]
    routes = [f"nats://127.0.0.1:{route}" for _, route, _ in ports]
    brokers = []
    for number, ((port, _, monitor), route) in enumerate(zip(ports, routes, strict=True), 1):
        argv = [binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-m", str(monitor)]
        argv += ["-n", f"{CLUSTER_NAME}-{number}", "--cluster_name", CLUSTER_NAME]
        argv += ["--cluster", route, "--routes", ",".join(r for r in routes if r != route)]
        argv += ["-sd", str(data / "nats" / str(number))]
        log = data / f"nats-server.{number}.log"
        brokers.append(Child(f"nats.{number}", argv, port=port, log=log, monitor_port=monitor))
    return brokers


@contextmanager
def throwaway_data_dir(settings: Settings) -> Iterator[Settings]:
    """`cluster --ephemeral`: the settings with a fresh private temporary data dir, removed
    with everything in it when the cluster exits (after a SIGTERM or Ctrl-C too).

    Not memory: the processes of a split share no memory, replicas of a module must share
    its store, and a module restarted after a crash must find its data again, so every
    process keeps its files there, as in a data dir, and nothing is left behind."""
    if not settings.ephemeral:
        yield settings
        return
    # A SIGTERM before the supervisor takes it (Ctrl-C is a KeyboardInterrupt already)
    # ends the cluster through the `finally` below, not around it.
    before = signal.signal(signal.SIGTERM, _stop_now)
    path = tempfile.mkdtemp(prefix="seams-cluster-")  # 0700
    try:
        yield msgspec.structs.replace(settings, data_dir=path, ephemeral=False)
    finally:
        shutil.rmtree(path, ignore_errors=True)
        signal.signal(signal.SIGTERM, before if before is not None else signal.SIG_DFL)


def _stop_now(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


@dataclass(frozen=True)
class Backoff:
    """How long a process that died waits before it is started again: `first`, doubling
    with each exit in a row up to `ceiling`; a process that stayed up `reset_after` seconds
    had a good run, and its next exit waits `first` again."""

    first: float = 0.5
    ceiling: float = 10.0
    reset_after: float = 30.0

    def next(self, streak: int, uptime: float) -> tuple[float, int]:
        """(the delay, the new streak) for an exit after `uptime` seconds, `streak` exits in
        a row before it."""
        if uptime >= self.reset_after:
            streak = 0
        return min(self.first * 2**streak, self.ceiling), streak + 1


STOP_GRACE_SECONDS = 15.0  # a process's own graceful stop takes up to 10 s (GRACEFUL_SECONDS)
NATS_STOP_SECONDS = 5.0
SYSTEM = "system"  # the name on the cluster's own lines, as in honcho


def describe_exit(returncode: int) -> str:
    """`-9 (SIGKILL)` for a process killed by a signal, else the status."""
    if returncode < 0:
        try:
            return f"{returncode} ({signal.Signals(-returncode).name})"
        except ValueError:
            return str(returncode)
    return str(returncode)


def exit_status(returncode: int) -> int:
    """The cluster's own status when a child's exit stops it: never 0 (the shell's 128+N for
    a signal)."""
    if returncode < 0:
        return 128 - returncode
    return returncode or 1


@dataclass
class Supervised:
    """One child of the cluster and what its supervisor remembers of it."""

    child: Child
    colour: str | None
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    streak: int = 0  # exits in a row, each after less than Backoff.reset_after
    restarts: int = 0
    restart_at: float | None = None


@dataclass(frozen=True)
class Output:
    name: str
    line: bytes
    at: datetime.datetime


@dataclass(frozen=True)
class Exited:
    name: str
    pid: int
    returncode: int


class Supervisor:
    """Runs a plan's processes, prints their output prefixed, restarts one that dies (or
    stops them all, with `exit_on_crash`), and stops them all on SIGTERM or SIGINT.

    Threads, not honcho's Manager (which can only stop everything when one exits): one
    thread per child reads its output and reports its exit on a queue; only the main thread
    starts, signals and restarts processes. honcho's Printer still writes every line, so the
    output keeps its shape: `HH:MM:SS name | line`, the cluster's own lines as `system`."""

    def __init__(
        self,
        the_plan: Plan,
        *,
        exit_on_crash: bool = False,
        backoff: Backoff | None = None,
        grace: float = STOP_GRACE_SECONDS,
        output: IO[str] | None = None,
    ) -> None:
        from honcho.colour import get_colours
        from honcho.printer import Printer

        self.plan = the_plan
        self.exit_on_crash = exit_on_crash
        self.backoff = backoff or Backoff()
        self.grace = grace
        out = output or sys.stdout
        self._printer = Printer(out, colour=out.isatty(), prefix=True)
        colours = get_colours()
        everyone = the_plan.brokers + the_plan.children
        self._slots = {child.name: Supervised(child, next(colours)) for child in everyone}
        self._printer.width = max(len(SYSTEM), *(len(name) for name in self._slots))
        self._events: queue.Queue[Output | Exited] = queue.Queue()
        self._signal: int | None = None
        self._stopping_since: float | None = None
        self._signals = 0
        self._killed = False
        self._brokers = {broker.name for broker in the_plan.brokers}
        self._broker_told: float | None = None
        self._broker_killed = False
        self._status = 0

    def run(self) -> int:
        """Until a stop signal (then 0) or, with `exit_on_crash`, a child's exit (then its
        status, never 0)."""
        for stop_signal in (signal.SIGTERM, signal.SIGINT):
            signal.signal(stop_signal, self._on_signal)
        try:
            for broker in self.plan.brokers:
                self._start(self._slots[broker.name])
            if self.plan.brokers and not self._brokers_ready():
                self._begin_stop()
            if self._stopping_since is None:
                for child in self.plan.children:
                    self._start(self._slots[child.name])
                self._say(
                    f"cluster: gateway on {self.plan.gateway_url}; broker {self.plan.nats_url}"
                    + self._broker_logs()
                    + f"; {len(self.plan.children)} processes; a process that dies is "
                    + ("stopping them all" if self.exit_on_crash else "restarted")
                    + "; Ctrl-C stops them all"
                )
            while not self._all_stopped():
                self._step()
        finally:
            for running in self._running():  # only after an error of the supervisor itself
                self._signal_group(running, signal.SIGKILL)
        return self._status

    def _step(self) -> None:
        if self._signal is not None and self._stopping_since is None:
            self._say(f"{signal.Signals(self._signal).name} received")
            self._begin_stop()
        event = self._next_event()
        if isinstance(event, Output):
            self._print(event.name, event.line, event.at)
        elif isinstance(event, Exited):
            self._exited(event)
        now = time.monotonic()
        if self._stopping_since is None and self._signal is None:  # never start while stopping
            for slot in self._slots.values():
                if slot.restart_at is not None and now >= slot.restart_at:
                    slot.restart_at = None
                    slot.restarts += 1
                    self._start(slot)
        elif self._stopping_since is not None:
            self._continue_stop(now)

    def _next_event(self) -> Output | Exited | None:
        """A line or an exit, or None after 0.1 s without one (time to look at the clock)."""
        try:
            return self._events.get(timeout=0.1)
        except queue.Empty:
            return None

    def _exited(self, event: Exited) -> None:
        slot = self._slots[event.name]
        if slot.process is None or slot.process.pid != event.pid:
            return
        slot.process = None
        if self._stopping_since is not None:
            self._say(f"{event.name} stopped (rc={event.returncode})")
            return
        how = f"{event.name} exited with {describe_exit(event.returncode)}"
        if self.exit_on_crash:
            self._say(f"{how}; --exit-on-crash: stopping the cluster")
            self._status = exit_status(event.returncode)
            self._begin_stop()
            return
        delay, slot.streak = self.backoff.next(slot.streak, time.monotonic() - slot.started_at)
        slot.restart_at = time.monotonic() + delay
        self._say(f"{how}; restarting in {delay:g} s (restart {slot.restarts + 1})")

    def _begin_stop(self) -> None:
        """SIGTERM to the gateway and every module process at once; the broker waits until
        they are gone (they flush their outboxes to it while stopping)."""
        self._stopping_since = time.monotonic()
        for slot in self._slots.values():
            slot.restart_at = None
        for running in self._running(broker=False):
            self._say(f"sending SIGTERM to {running.child.name} (pid {self._pid(running)})")
            self._signal_group(running, signal.SIGTERM)

    def _continue_stop(self, now: float) -> None:
        """SIGKILL for a process still running after the grace period (or at a second Ctrl-C);
        then the broker's turn: SIGINT, and SIGKILL if it is not gone in a few seconds."""
        assert self._stopping_since is not None
        late = now - self._stopping_since > self.grace
        if not self._killed and (late or self._signals > 1):
            self._killed = True
            why = f"still running after {self.grace:g} s" if late else "asked twice"
            for running in self._running(broker=False):
                self._say(
                    f"sending SIGKILL to {running.child.name} (pid {self._pid(running)}): {why}"
                )
                self._signal_group(running, signal.SIGKILL)
        brokers = [slot for slot in self._running() if slot.child.name in self._brokers]
        if not brokers or self._running(broker=False):
            return
        if self._broker_told is None:
            self._broker_told = now
            for broker in brokers:
                # Graceful on either; nats-server 2.9 exits 0 after SIGINT, 1 after SIGTERM.
                self._say(f"sending SIGINT to {broker.child.name} (pid {self._pid(broker)})")
                self._signal_group(broker, signal.SIGINT)
        elif now - self._broker_told > NATS_STOP_SECONDS and not self._broker_killed:
            self._broker_killed = True
            for broker in brokers:
                self._say(f"sending SIGKILL to {broker.child.name} (pid {self._pid(broker)})")
                self._signal_group(broker, signal.SIGKILL)

    def _on_signal(self, signum: int, _frame: object) -> None:
        """Only noted here; the main loop acts on it (a handler must not print or wait)."""
        self._signal = signum
        self._signals += 1

    def _start(self, slot: Supervised) -> None:
        child = slot.child
        if child.name in self._brokers:
            process = spawn_broker(child)
        else:
            # Its own session, as under honcho: a Ctrl-C in the terminal reaches the cluster
            # alone, which stops each process in order (the broker last).
            process = subprocess.Popen(
                child.argv,
                env={**os.environ, **child.env},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        slot.process = process
        slot.started_at = time.monotonic()
        self._say(f"{child.name} started (pid={process.pid})")
        threading.Thread(
            target=self._watch, args=(child.name, process), name=child.name, daemon=True
        ).start()

    def _watch(self, name: str, process: subprocess.Popen[bytes]) -> None:
        """A child's lines, then its exit, onto the queue (in that order)."""
        if process.stdout is not None:
            for line in iter(process.stdout.readline, b""):
                self._events.put(Output(name, line, datetime.datetime.now()))
            process.stdout.close()
        self._events.put(Exited(name, process.pid, process.wait()))

    def _brokers_ready(self, timeout: float = 10.0) -> bool:
        """Every private broker listens and, in a cluster, JetStream has elected its meta
        leader (before that, creating the stream fails); else say why, status 2."""
        deadline = time.monotonic() + timeout
        waiting = list(self.plan.brokers)
        while waiting and time.monotonic() < deadline and self._signal is None:
            broker = waiting[0]
            process = self._slots[broker.name].process
            if process is None or process.poll() is not None:
                self._say(f"{broker.name}: nats-server exited at once; see {broker.log}")
                self._status = 2
                return False
            if broker_ready(broker):
                waiting.pop(0)
            else:
                time.sleep(0.05)
        if waiting and self._signal is None:
            self._say(
                f"{waiting[0].name}: nats-server not ready on port {waiting[0].port} within "
                f"{timeout:g} s; see {waiting[0].log}"
            )
            self._status = 2
        return not waiting

    def _broker_logs(self) -> str:
        logs = [str(broker.log) for broker in self.plan.brokers if broker.log is not None]
        if not logs:
            return ""
        return f", its log in {logs[0]}" if len(logs) == 1 else f", logs {', '.join(logs)}"

    def _running(self, *, broker: bool = True) -> list[Supervised]:
        return [
            slot
            for slot in self._slots.values()
            if slot.process is not None and (broker or slot.child.name not in self._brokers)
        ]

    def _all_stopped(self) -> bool:
        return self._stopping_since is not None and not self._running()

    @staticmethod
    def _pid(slot: Supervised) -> int:
        assert slot.process is not None
        return slot.process.pid

    @staticmethod
    def _signal_group(slot: Supervised, signum: int) -> None:
        """The signal to the child's whole process group (it leads its own session)."""
        if slot.process is not None:
            # Gone already (its exit is on the queue): nothing to signal.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(slot.process.pid, signum)

    def _say(self, text: str) -> None:
        self._print(SYSTEM, text, datetime.datetime.now())

    def _print(self, name: str, data: bytes | str, at: datetime.datetime) -> None:
        from honcho.printer import Message

        slot = self._slots.get(name)
        colour = slot.colour if slot is not None else None
        self._printer.write(Message(type="line", data=data, time=at, name=name, colour=colour))


def run(the_plan: Plan, *, exit_on_crash: bool = False) -> int:
    """Run and supervise the plan until SIGTERM or Ctrl-C (0), or, with `exit_on_crash`,
    until a process exits (its status, never 0)."""
    return Supervisor(the_plan, exit_on_crash=exit_on_crash).run()


def broker_ready(broker: Child) -> bool:
    """The broker takes clients and, when clustered, its JetStream has a meta leader."""
    assert broker.port is not None
    try:
        socket.create_connection(("127.0.0.1", broker.port), timeout=0.5).close()
    except OSError:
        return False
    if broker.monitor_port is None:
        return True
    jsz = f"http://127.0.0.1:{broker.monitor_port}/jsz"
    try:
        with urllib.request.urlopen(jsz, timeout=0.5) as answer:
            state = msgspec.json.decode(answer.read())
    except (OSError, msgspec.DecodeError):
        return False
    return bool(state.get("meta_cluster", {}).get("leader"))


def spawn_broker(broker: Child) -> subprocess.Popen[bytes]:
    """A private broker, its output appended to its log (or dropped without a data dir)."""
    log: int = subprocess.DEVNULL
    if broker.log is not None:
        make_private_file(broker.log)  # 0600 in a 0700 dir, like every store file
        log = os.open(broker.log, os.O_WRONLY | os.O_APPEND)
    # Its own session: a Ctrl-C sent to the terminal's process group must not stop the broker
    # before the processes that still flush to it. umask 077: its JetStream files hold every
    # event (personal data included), so they are the owner's alone.
    try:
        return subprocess.Popen(
            broker.argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            umask=0o077,
        )
    finally:
        if log != subprocess.DEVNULL:
            os.close(log)  # the child has its own copy


def start_nats(the_plan: Plan, timeout: float = 10.0) -> subprocess.Popen[bytes]:
    """The private broker, ready before any process that needs it starts."""
    assert the_plan.nats is not None
    process = spawn_broker(the_plan.nats)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ClusterError(f"nats-server exited at once (status {process.returncode})")
        if broker_ready(the_plan.nats):
            return process
        time.sleep(0.05)
    process.kill()
    raise ClusterError(f"nats-server did not listen on {the_plan.nats_url} within {timeout}s")


def stop_nats(process: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """A graceful stop (SIGINT: nats-server 2.9 then exits 0; after SIGTERM it exits 1)."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
