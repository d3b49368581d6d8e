"""Shared fixtures: the anyio backend and the whole system on each store a user can pick;
the hook that tells tests/support/tiers.py which test is running."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support import tiers
from tests.support.seams import Seams, fast_settings, running
from tests.support.stores import BACKENDS, store_urls


def pytest_collection_finish(session: pytest.Session) -> None:
    # What is imported by now (the app, Litestar, hypothesis…) lives for the whole run: out of
    # the collector's sight, each full collection walks only what the tests made (~3 s less
    # for the fast tier, where hundreds of apps are built and dropped).
    gc.collect()
    gc.freeze()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    tiers.now_running(item)  # before its fixtures: a module-scoped one may start a server


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    tiers.now_running(None)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=BACKENDS)
async def seams(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Seams]:
    """The whole system through its gateway, once per store backend."""
    async with store_urls(request.param, tmp_path) as urls, running(fast_settings(**urls)) as s:
        yield s
