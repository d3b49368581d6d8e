"""The gateway process in front of module processes: only it may reach them, it finds them
through NATS, and it says which module is missing instead of hanging."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest

from app.gateway.auth import jwt_auth
from app.kernel.settings import Settings
from tests.support.nats import nats_server_binary
from tests.support.seams import PASSWORD
from tests.support.split import SECRET, Split, admin_headers, free_gateway_port, split_system
from tests.support.tiers import skip_or_fail

# Slow: whichever test runs first waits for the split to start (five processes and a broker).
pytestmark = [pytest.mark.anyio, pytest.mark.services, pytest.mark.split, pytest.mark.slow]

DROP_OUT_SECONDS = 6.0  # the discovery TTL is 4 s; the machine is slow and shared


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def split(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Split]:
    async with split_system(tmp_path_factory.mktemp("split"), replicas={"payments": 2}) as s:
        yield s


async def test_a_module_process_refuses_a_direct_call_even_with_a_valid_token(
    split: Split,
) -> None:
    user = await split.register("Dee")
    orders = split.processes["orders"]
    async with httpx.AsyncClient(base_url=orders.url, timeout=5) as direct:
        with_token = await direct.get("/api/orders", headers=user["headers"])
        as_admin = await direct.get("/api/orders", headers=admin_headers())
        forged = await direct.get("/api/orders", headers={"x-seams-gateway-proof": "e30.e30.x"})
        health = await direct.get("/health")

    for answer in (with_token, as_admin, forged):
        assert answer.status_code == 401, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
    assert "through the gateway" in with_token.json()["detail"]
    assert health.status_code == 200  # probes stay open
    # The same request through the gateway is answered.
    assert (await split.client.get("/api/orders", headers=user["headers"])).status_code == 200


async def test_a_module_process_is_ready_only_with_its_broker(split: Split) -> None:
    async with httpx.AsyncClient(base_url=split.processes["payments.1"].url, timeout=5) as c:
        ready = (await c.get("/ready")).json()
    assert ready["checks"]["bus.transport"] == "ok"
    gateway = (await split.client.get("/ready")).json()
    assert gateway["checks"] == {
        "broker": "ok",
        "users": "ok",
        "orders": "ok",
        "payments": "ok",
        "notifications": "ok",
    }


async def test_requests_are_balanced_across_replicas(split: Split) -> None:
    for _ in range(20):
        assert (await split.client.get("/api/payments")).status_code == 200
    served = []
    for name in ("payments.1", "payments.2"):
        async with httpx.AsyncClient(base_url=split.processes[name].url, timeout=5) as c:
            metrics = (await c.get("/metrics")).text
        served.append(
            sum(
                float(line.rsplit(" ", 1)[1])
                for line in metrics.splitlines()
                if line.startswith("seams_requests_total{") and 'path="/api/payments"' in line
            )
        )
    assert all(count >= 5 for count in served), served


async def test_a_module_with_no_live_instance_is_a_503_naming_it_at_once(split: Split) -> None:
    split.kill("notifications")  # SIGKILL: it withdraws nothing, its entry has to lapse
    deadline = time.monotonic() + DROP_OUT_SECONDS
    while True:
        started = time.monotonic()
        answer = await split.client.get("/api/notifications")
        elapsed = time.monotonic() - started
        if answer.status_code == 503 or time.monotonic() > deadline:
            break
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"] == "1"
    assert "'notifications' has no live instance" in answer.json()["detail"]
    assert elapsed < 1.0  # no waiting for an instance to appear
    ready = await split.client.get("/ready")
    assert ready.status_code == 503
    assert ready.json()["checks"]["notifications"] == "failing: no live instance"
    # The rest of the system keeps answering.
    assert (await split.client.get("/api/orders")).status_code == 200


async def test_a_replica_that_dies_drops_out_and_the_other_serves(split: Split) -> None:
    split.kill("payments.1")
    deadline = time.monotonic() + DROP_OUT_SECONDS
    answers = []
    while time.monotonic() < deadline:
        answers.append((await split.client.get("/api/payments")).status_code)
    # Whatever the gateway tried while the dead replica's entry lapsed, a refused
    # connection was retried on the live one: never a 5xx.
    assert set(answers) == {200}, answers


def test_python_m_app_cluster_starts_the_split_and_stops_it_on_sigterm(
    tmp_path: Path,
) -> None:
    binary = nats_server_binary()
    if binary is None:
        skip_or_fail("no nats-server binary (apt-get install nats-server)")
    assert binary is not None
    port = free_gateway_port()
    env = {
        **os.environ,
        "PATH": f"{Path(binary).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "APP_PASSWORD_HASHING": "argon2id-fast",
        "APP_LOG_LEVEL": "INFO",
    }
    log_path = tmp_path / "cluster.log"
    with open(log_path, "wb") as log:
        cluster = subprocess.Popen(
            [
                *(sys.executable, "-m", "app", "cluster", "--port", str(port)),
                *("--data-dir", str(tmp_path / "data"), "--replicas", "payments=2"),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=2) as c:
                deadline = time.monotonic() + 40
                status = None
                while time.monotonic() < deadline and status != 200:
                    try:
                        status = c.get("/ready").status_code
                    except httpx.TransportError:
                        status = None
                    time.sleep(0.2)
                assert status == 200, log_path.read_text()
            cluster.send_signal(signal.SIGTERM)
            cluster.wait(30)
        finally:
            if cluster.poll() is None:
                cluster.kill()
    output = log_path.read_text()
    for name in ("gateway", "users", "orders", "payments.1", "payments.2", "notifications"):
        assert f"{name} stopped (rc=0)" in output, output
        # Every line a process printed is prefixed with its name.
        assert any(line.split("|")[0].split()[-1] == name for line in output.splitlines())
    assert (tmp_path / "data" / "nats-server.log").exists()
    # The broker's log and its JetStream files (every event, personal data included) are the
    # owner's alone, like the stores.
    loose = [
        f"{path} {oct(path.stat().st_mode & 0o777)}"
        for path in [tmp_path / "data", *(tmp_path / "data").rglob("*")]
        if path.stat().st_mode & 0o077
    ]
    assert loose == []


async def test_the_gateway_process_refuses_a_token_once_its_password_changed(split: Split) -> None:
    user = await split.register("Gus")
    path = f"/api/users/{user['id']}"
    assert (await split.client.get(path, headers=user["headers"])).status_code == 200

    changed = await split.client.patch(
        path,
        json={"password": "a new password", "current_password": PASSWORD},
        headers=user["headers"],
    )

    assert changed.status_code == 200, changed.text
    deadline = time.monotonic() + 3.0  # the gateway re-asks the users processes every 1 s
    stale = await split.client.get(path, headers=user["headers"])
    while stale.status_code == 200 and time.monotonic() < deadline:
        await anyio.sleep(0.05)
        stale = await split.client.get(path, headers=user["headers"])
    assert stale.status_code == 401, stale.text
    fresh = await split.log_in(user["email"], "a new password")
    assert (await split.client.get(path, headers=fresh["headers"])).status_code == 200


async def test_the_gateway_process_takes_the_role_from_the_users_store(split: Split) -> None:
    user = await split.register("Hal")
    await split.register("Ivy")  # someone an admin would see
    forged_admin = {
        "Authorization": "Bearer "
        + jwt_auth(Settings.from_env({}, secret_key=SECRET), SECRET).create_token(
            identifier=user["id"], token_extras={"role": "admin", "gen": 1}
        )
    }  # signed right, but the stored user is no admin

    listed = await split.client.get("/api/users", headers=forged_admin)

    assert listed.status_code == 200
    assert [u["id"] for u in listed.json()["items"]] == [user["id"]]


async def test_the_gateways_own_get_routes_under_a_prefix_refuse_other_methods_as_the_monolith(
    split: Split,
) -> None:
    # The monolith's router answers 405 (Allow: GET, OPTIONS) before any token is asked.
    user = await split.register("Method")
    for headers in ({}, user["headers"]):
        for method, path in [
            ("POST", "/api/orders/x/journey"),
            ("DELETE", "/api/payments/x/journey"),
            ("POST", "/api/users/x/export"),
        ]:
            answer = await split.client.request(method, path, headers=headers)
            assert answer.status_code == 405, (method, path, answer.text)
            assert answer.headers["allow"] == "GET, OPTIONS"
            assert answer.headers["content-type"].startswith("application/problem+json")
