"""The stores a user can pick, as test backends: every end-to-end test runs on each.

BACKENDS are fixture params that carry their tier: the ones on a real server are marked
`services`, so `-m "not services"` leaves them out and a test on them needs no marker."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.support.tiers import require_marks, skip_or_fail

POSTGRES_URL = os.environ.get(
    "SEAMS_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
MONGODB_URL = os.environ.get("SEAMS_TEST_MONGODB_URL")

SQL_MODULES = ("users", "payments", "notifications")
BACKENDS = (
    "memory",
    "files",
    "mongomock",
    pytest.param("postgresql", marks=pytest.mark.services),
    pytest.param("mongodb", marks=pytest.mark.services),
)


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _postgres_reachable() -> str | None:
    import asyncpg

    try:
        connection = await asyncio.wait_for(asyncpg.connect(_asyncpg_dsn(POSTGRES_URL)), 3)
    except Exception as error:
        return f"PostgreSQL at {POSTGRES_URL} is not reachable ({error!r})"
    await connection.close()
    return None


@asynccontextmanager
async def store_urls(backend: str, tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    """Settings overrides that put every module's store on the chosen backend."""
    if backend == "memory":
        yield {"ephemeral": "true"}
    elif backend == "files":
        yield {"data_dir": str(tmp_path / "var")}
    elif backend == "mongomock":
        yield {"ephemeral": "true", "orders_db_url": "mongomock://localhost/seams_orders"}
    elif backend == "mongodb":
        require_marks("services")
        if MONGODB_URL is None:
            # No MongoDB server can be installed on this machine kind: this one is opt-in.
            pytest.skip("no MongoDB server: set SEAMS_TEST_MONGODB_URL=mongodb://… to run")
        database = f"seams_test_{uuid.uuid4().hex[:12]}"
        yield {"ephemeral": "true", "orders_db_url": f"{MONGODB_URL.rstrip('/')}/{database}"}
    elif backend == "postgresql":
        async with postgres_databases(SQL_MODULES) as urls:
            yield {"ephemeral": "true", **{f"{m}_db_url": url for m, url in urls.items()}}
    else:
        raise ValueError(backend)


@asynccontextmanager
async def postgres_databases(modules: tuple[str, ...]) -> AsyncIterator[dict[str, str]]:
    """A fresh PostgreSQL database per module, dropped afterwards."""
    import asyncpg

    require_marks("services")
    problem = await _postgres_reachable()
    if problem is not None:
        skip_or_fail(problem)
    suffix = uuid.uuid4().hex[:10]
    names = {module: f"seams_test_{module}_{suffix}" for module in modules}
    admin = await asyncpg.connect(_asyncpg_dsn(POSTGRES_URL))
    try:
        for name in names.values():
            await admin.execute(f'CREATE DATABASE "{name}"')
        base = POSTGRES_URL.rsplit("/", 1)[0]
        yield {module: f"{base}/{name}" for module, name in names.items()}
    finally:
        for name in names.values():
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
