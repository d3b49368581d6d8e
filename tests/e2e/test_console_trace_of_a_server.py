"""`python -m app` with APP_TRACING=console prints an order's trace readably (issue 14,
point 8): one line per span, parent before child, indented by depth, no JSON dumps."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import httpx
import pytest

from tests.support.server import Server, log_in, served

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

# The chain of one order: each span a child (or grandchild) of the one before.
CHAIN = (
    "orders placeOrder",
    "orders publish OrderPlaced",
    "payments handle OrderPlaced",
    "payments publish PaymentSucceeded",
    "notifications handle PaymentSucceeded",
)


async def place_an_order(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10.0) as client:
        registered = await client.post(
            "/api/users",
            json={"name": "Tess", "email": "tess@example.com", "password": "correct horse"},
        )
        assert registered.status_code == 201, registered.text
        headers = await log_in(server.url, "tess@example.com", "correct horse")
        placed = await client.post(
            "/api/orders",
            headers=headers,
            json={
                "currency": "EUR",
                "payment_token": "tok_visa",
                "items": [{"sku": "book", "quantity": 1, "unit_price": 1250}],
            },
        )
        assert placed.status_code == 201, placed.text


def order_trace(log: str) -> list[str]:
    """The lines of the trace whose root is POST /api/orders, header first."""
    lines = log.splitlines()
    start = next((i for i, line in enumerate(lines) if "  POST /api/orders  " in line), None)
    if start is None:
        return []
    block = [lines[start]]
    for line in lines[start + 1 :]:
        if not line.startswith("  "):
            break
        block.append(line)
    return block


def depth(line: str) -> int:
    return (len(line) - len(line.lstrip(" "))) // 2


async def test_an_orders_trace_is_printed_as_an_indented_tree(tmp_path: Path) -> None:
    async with served(tmp_path / "var", {"APP_TRACING": "console"}) as server:
        await place_an_order(server)
        await server.wait_quiet()
        deadline = time.monotonic() + 10
        while not any(CHAIN[-1] in line for line in order_trace(server.log_path.read_text())):
            assert time.monotonic() < deadline, server.log_tail()
            await anyio.sleep(0.1)
        log = server.log_path.read_text()

    block = order_trace(log)
    assert block[0].startswith("trace ")
    assert block[0].endswith(" ms")
    assert " 201 " in block[0]
    at = [next(i for i, line in enumerate(block) if name in line) for name in CHAIN]
    assert at == sorted(at), block  # parent before child
    depths = [depth(block[i]) for i in at]
    assert depths == sorted(depths) and len(set(depths)) == len(depths), block  # nested
    assert all(line.rstrip().endswith(" ms") for line in block[1:]), block
    assert not any(line.lstrip().startswith(("{", '"')) for line in log.splitlines())
