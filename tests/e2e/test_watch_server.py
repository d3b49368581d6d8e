"""The watch's stream through a real `python -m app`: read as a browser's fetch reads it, and a
stop that does not wait for a page left open."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.support.server import served

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.mark.parametrize("server", ["uvicorn", "granian"])
async def test_a_stop_ends_an_open_stream_at_once(tmp_path: Path, server: str) -> None:
    async with served(tmp_path / "data", {"APP_SERVER": server}) as app:
        async with (
            httpx.AsyncClient(base_url=app.url, headers=app.admin, timeout=10.0) as client,
            client.stream("GET", "/api/watch/stream") as stream,
        ):
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.aiter_lines()
            assert await anext(lines) == ": seams watch"
            placed = await client.post(
                "/api/users",
                json={"name": "Ada", "email": "ada@example.com", "password": "correct horse"},
            )
            assert placed.status_code == 201
            while not (await anext(lines)).startswith("event: published"):
                pass  # the registration's request comes first, then its event

            started = time.monotonic()
            assert await app.terminate() == 0
            stopped = time.monotonic() - started
            async for _line in lines:  # the answer ends whole (no cut connection)
                pass
        assert stopped < 5, f"the stop took {stopped:.1f} s with a stream open"
