"""A process of the split started while its broker is down waits for it instead of failing
to start (docs/decisions/0041-starting-without-the-broker.md): it says so once, starts by
itself when the broker comes, and a SIGTERM while it waits is a clean stop (status 0).
Real processes: `python -m app --modules notifications` and a private nats-server started
after it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from app.kernel.settings import Settings
from app.split.cluster import Child, plan
from tests.support.nats import NatsServer, nats_server_binary
from tests.support.split import SECRET, SPLIT_ENV, free_gateway_port
from tests.support.tiers import skip_or_fail

pytestmark = [pytest.mark.services, pytest.mark.split]

WAITING = "cannot be reached: this process starts once it can"
READY_SECONDS = 40.0
STOP_SECONDS = 10.0


def broker(tmp_path: Path) -> NatsServer:
    """A private broker, not started yet."""
    binary = nats_server_binary()
    if binary is None:
        skip_or_fail("no nats-server binary (apt-get install nats-server)")
    assert binary is not None
    return NatsServer(binary, tmp_path / "nats")


def notifications_child(tmp_path: Path, nats_url: str) -> Child:
    settings = Settings.from_env({}, data_dir=str(tmp_path / "split"), port=free_gateway_port())
    the_plan = plan(settings, ["notifications"], replicas={}, nats_url=nats_url, secret_key=SECRET)
    [child] = [c for c in the_plan.children if c.name == "notifications"]
    return child


@contextmanager
def started(child: Child, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            child.argv,
            env={**os.environ, **SPLIT_ENV, "APP_LOG_LEVEL": "INFO", **child.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[2],
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(STOP_SECONDS)


def wait_for_line(log_path: Path, text: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while text not in log_path.read_text(errors="replace"):
        assert process.poll() is None, log_path.read_text(errors="replace")
        assert time.monotonic() < deadline, f"never said {text!r}:\n{log_path.read_text()}"
        time.sleep(0.05)


def test_a_module_started_before_its_broker_waits_for_it_then_serves(tmp_path: Path) -> None:
    nats = broker(tmp_path)
    child = notifications_child(tmp_path, nats.url)
    log_path = tmp_path / "notifications.log"
    try:
        with started(child, log_path) as process:
            wait_for_line(log_path, WAITING, process)
            time.sleep(1.5)  # several naps: still waiting, said once, not serving
            assert process.poll() is None
            assert log_path.read_text().count(WAITING) == 1
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"http://127.0.0.1:{child.port}/health", timeout=2)

            nats.start()
            deadline = time.monotonic() + READY_SECONDS
            while True:
                try:
                    ready = httpx.get(f"http://127.0.0.1:{child.port}/ready", timeout=2)
                    if ready.status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert process.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.1)

            process.send_signal(signal.SIGTERM)
            assert process.wait(STOP_SECONDS) == 0, log_path.read_text()
        text = log_path.read_text()
        assert "is there after" in text
        assert "Traceback" not in text and "ERROR" not in text, text
    finally:
        nats.stop()


def test_a_module_stopped_while_it_waits_for_its_broker_exits_cleanly(tmp_path: Path) -> None:
    nats = broker(tmp_path)  # never started
    child = notifications_child(tmp_path, nats.url)
    log_path = tmp_path / "notifications.log"
    with started(child, log_path) as process:
        wait_for_line(log_path, WAITING, process)
        stopped_at = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(STOP_SECONDS) == 0, log_path.read_text()
        assert time.monotonic() - stopped_at < 3.0
    text = log_path.read_text()
    assert "nothing was started" in text
    assert "Traceback" not in text, text
