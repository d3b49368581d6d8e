"""`python -m app` at the socket, under each ASGI server it offers: whose X-Forwarded-For
it believes, and how long it keeps a connection that sends a request head slowly, or nothing.

Each test starts a real server process (tests/support/server.py): the proxy headers and the
connection timeouts are the server's, not the app's.
"""

from __future__ import annotations

import time
from contextlib import suppress
from pathlib import Path

import anyio
import httpx
import pytest

from tests.support.server import served

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SERVERS = ("uvicorn", "granian")
SLOW_CLIENTS = 40
HEADER_TIMEOUT = 1.0  # APP_HEADER_TIMEOUT_SECONDS in these tests
KEEP_ALIVE = 1  # APP_KEEP_ALIVE_SECONDS in these tests
GRACE = 3.0  # how much later than its timeout a connection may be seen closed


async def registrations_from(url: str, forwarded_for: list[str]) -> list[int]:
    """One unauthenticated request per X-Forwarded-For value, in order; their statuses."""
    statuses = []
    async with httpx.AsyncClient(base_url=url, timeout=10.0) as client:
        for address in forwarded_for:
            response = await client.post(
                "/api/users", json={}, headers={"X-Forwarded-For": address}
            )
            statuses.append(response.status_code)
    return statuses


@pytest.mark.parametrize("server", SERVERS)
async def test_x_forwarded_for_from_an_untrusted_client_does_not_buy_a_new_rate_budget(
    server: str, tmp_path: Path
) -> None:
    env = {"APP_SERVER": server, "APP_RATE_LIMIT_PER_MINUTE": "3"}
    with anyio.fail_after(60):
        async with served(tmp_path, env) as seams:  # its admin's login spent one request
            statuses = await registrations_from(
                seams.url, ["203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.4"]
            )

    assert 429 in statuses, statuses  # every address was the loopback client's own budget


@pytest.mark.parametrize("server", SERVERS)
async def test_x_forwarded_for_from_a_trusted_proxy_names_the_client_the_limit_counts(
    server: str, tmp_path: Path
) -> None:
    env = {
        "APP_SERVER": server,
        "APP_RATE_LIMIT_PER_MINUTE": "3",
        "APP_TRUSTED_PROXIES": "127.0.0.0/8,::1",
    }
    with anyio.fail_after(60):
        async with served(tmp_path, env) as seams:
            each_its_own = await registrations_from(
                seams.url, ["203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.4"]
            )
            one_client = await registrations_from(seams.url, ["198.51.100.7"] * 4)

    assert 429 not in each_its_own, each_its_own
    assert one_client[:3] != [429] * 3 and one_client[-1] == 429, one_client


async def slow_head(port: int) -> tuple[float, bytes]:
    """A slowloris client: a request line and a header, then one header byte every 0.2 s
    and never the blank line. How long until the server hangs up, and what it said."""
    started = time.monotonic()
    answer = b""
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        while True:
            with anyio.move_on_after(0.2):
                with suppress(anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                    answer = await stream.receive()  # an answer, or the end of the connection
                return time.monotonic() - started, answer
            try:
                await stream.send(b"x")
            except (anyio.BrokenResourceError, OSError):
                return time.monotonic() - started, answer


@pytest.mark.parametrize("server", SERVERS)
async def test_connections_sending_a_request_head_slowly_are_closed_after_the_header_timeout(
    server: str, tmp_path: Path
) -> None:
    env = {"APP_SERVER": server, "APP_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT)}
    async with served(tmp_path, env) as seams:
        port = int(seams.url.rsplit(":", 1)[1])
        held: list[tuple[float, bytes]] = []

        async def hold_one() -> None:
            held.append(await slow_head(port))

        with anyio.fail_after(HEADER_TIMEOUT + GRACE + 5):
            async with anyio.create_task_group() as clients:
                for _ in range(SLOW_CLIENTS):
                    clients.start_soon(hold_one)
                await anyio.sleep(HEADER_TIMEOUT / 2)  # the slow clients are all connected
                async with httpx.AsyncClient(base_url=seams.url, timeout=5.0) as client:
                    meanwhile = await client.get("/health")

    assert meanwhile.status_code == 200
    assert len(held) == SLOW_CLIENTS
    assert max(seconds for seconds, _ in held) < HEADER_TIMEOUT + GRACE, sorted(held)
    answers = {answer.partition(b"\r\n")[0] for _, answer in held}
    assert answers <= {b"", b"HTTP/1.1 408 Request Timeout"}, answers  # never a 500


async def silence(port: int, request: bytes) -> float:
    """Send `request` (maybe nothing), read what comes back, then stay silent: how long until
    the server hangs up."""
    started = time.monotonic()
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        if request:
            await stream.send(request)
        with suppress(anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            while await stream.receive():
                pass
    return time.monotonic() - started


@pytest.mark.parametrize("server", SERVERS)
async def test_a_kept_alive_connection_left_idle_is_closed_after_its_timeout(
    server: str, tmp_path: Path
) -> None:
    env = {
        "APP_SERVER": server,
        "APP_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),  # granian's idle timeout too
        "APP_KEEP_ALIVE_SECONDS": str(KEEP_ALIVE),
    }
    async with served(tmp_path, env) as seams:
        port = int(seams.url.rsplit(":", 1)[1])
        with anyio.fail_after(KEEP_ALIVE + GRACE + 5):
            idle_for = await silence(port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")

    assert idle_for < max(KEEP_ALIVE, HEADER_TIMEOUT) + GRACE


async def test_a_connection_that_never_sends_a_byte_is_closed_after_the_header_timeout(
    tmp_path: Path,
) -> None:
    """Under uvicorn, the default server. (Granian's header timer starts at the first byte:
    there, a silent connection stays until the client or the OS drops it.)"""
    env = {"APP_SERVER": "uvicorn", "APP_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT)}
    async with served(tmp_path, env) as seams:
        port = int(seams.url.rsplit(":", 1)[1])
        with anyio.fail_after(HEADER_TIMEOUT + GRACE + 5):
            silent_for = await silence(port, b"")

    assert silent_for < HEADER_TIMEOUT + GRACE
