"""The cluster's supervisor with stand-in children (small Python processes, no broker): the
backoff between restarts as its output says it, and a stop that is clean, bounded and never
restarts anything.

It runs in a process of its own, as `python -m app cluster` does, since it takes SIGTERM
and SIGINT for itself.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow]

SUPERVISE = """
import json, sys
from app.split.cluster import Child, Plan, Supervisor
spec = json.loads(sys.argv[1])
children = [Child(name, [sys.executable, "-c", code]) for name, code in spec["children"]]
sys.exit(Supervisor(Plan(children, "(none)", "(none)"), grace=spec["grace"]).run())
"""
STEADY = "import time\nprint('up', flush=True)\nwhile True: time.sleep(1)"
STUBBORN = (
    "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('up, deaf to SIGTERM', flush=True)\ntime.sleep(600)"
)
FAILING = "import sys\nprint('failing', flush=True)\nsys.exit(3)"
WAIT_SECONDS = 20.0


@contextmanager
def supervising(tmp_path: Path, grace: float, **children: str) -> Iterator[Supervising]:
    log_path = tmp_path / "supervisor.log"
    spec = json.dumps({"children": list(children.items()), "grace": grace})
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", SUPERVISE, spec],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[2],
        )
    running = Supervising(process, log_path)
    try:
        yield running
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for pid in map(int, re.findall(r"started \(pid=(\d+)\)", running.output())):
            try:
                if b"-c" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)
            except OSError:
                continue


class Supervising:
    def __init__(self, process: subprocess.Popen[bytes], log_path: Path) -> None:
        self.process = process
        self.log_path = log_path

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, what: str) -> None:
        deadline = time.monotonic() + WAIT_SECONDS
        while what not in self.output():
            assert self.process.poll() is None, self.output()
            assert time.monotonic() < deadline, f"no {what!r} in:\n{self.output()}"
            time.sleep(0.05)


def test_a_failing_process_waits_longer_each_time_and_a_stop_restarts_nothing(
    tmp_path: Path,
) -> None:
    with supervising(tmp_path, grace=1.0, steady=STEADY, stubborn=STUBBORN, failing=FAILING) as s:
        s.wait_for("stubborn | up, deaf to SIGTERM")
        s.wait_for("failing exited with 3; restarting in 0.5 s (restart 1)")
        s.wait_for("failing exited with 3; restarting in 1 s (restart 2)")
        s.wait_for("failing exited with 3; restarting in 2 s (restart 3)")

        s.process.send_signal(signal.SIGTERM)
        status = s.process.wait(WAIT_SECONDS)
        output = s.output()

    assert status == 0, output
    stopping = output.split("SIGTERM received")[1]
    assert "started" not in stopping and "restarting" not in stopping, stopping
    assert re.search(r"sending SIGKILL to stubborn \(pid \d+\): still running after 1 s", stopping)
    assert "steady stopped (rc=-15)" in stopping and "stubborn stopped (rc=-9)" in stopping
    assert "sending SIGKILL to steady" not in stopping  # only the one that needed it
    assert re.search(r"^\d\d:\d\d:\d\d steady +\| up$", output, re.MULTILINE)  # honcho's shape


def test_a_second_ctrl_c_kills_what_is_still_stopping_at_once(tmp_path: Path) -> None:
    with supervising(tmp_path, grace=60.0, stubborn=STUBBORN) as s:
        s.wait_for("stubborn | up")
        s.process.send_signal(signal.SIGINT)
        s.wait_for("sending SIGTERM to stubborn")
        started = time.monotonic()
        s.process.send_signal(signal.SIGINT)
        status = s.process.wait(WAIT_SECONDS)

    assert status == 0, s.output()
    assert time.monotonic() - started < 5.0
    assert re.search(r"sending SIGKILL to stubborn \(pid \d+\): asked twice", s.output())
