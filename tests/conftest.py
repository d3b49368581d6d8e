"""Shared fixtures: the anyio backend and the whole system on each store a user can pick."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.seams import Seams, fast_settings, running
from tests.support.stores import BACKENDS, store_urls


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=BACKENDS)
async def seams(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Seams]:
    """The whole system through its gateway, once per store backend."""
    async with store_urls(request.param, tmp_path) as urls, running(fast_settings(**urls)) as s:
        yield s
