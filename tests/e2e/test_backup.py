"""`python -m app backup DIR` while orders pour in, `python -m app restore DIR` into a new data
dir, and a start there: every order the restored system holds settles, and the events sent
again change nothing (issue 17, point 6; docs/decisions/0029-backups.md)."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests.e2e.test_crash import orders_pouring_in, processor_books, register_users
from tests.support.invariants import ledger_breaches, order_breaches, read_records
from tests.support.seams import all_pages
from tests.support.server import run_briefly, served

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

BEFORE_BACKUP = 30  # orders acknowledged before the copy starts


async def until_placed(load: Any, count: int, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while len(load.placed) < count:
        assert time.monotonic() < deadline, f"only {len(load.placed)} orders in {seconds} s"
        await anyio.sleep(0.05)


async def test_a_backup_under_load_restores_to_a_system_where_every_order_settles_once(
    tmp_path: Path,
) -> None:
    data_dir, backup, restored = tmp_path / "var", tmp_path / "backup", tmp_path / "restored"
    async with served(data_dir) as server:
        users = await register_users(server.url)
        async with orders_pouring_in(server.url, users, random.Random(17)) as load:
            await until_placed(load, BEFORE_BACKUP)
            code, output = await run_briefly(
                ["backup", str(backup), "--data-dir", str(data_dir)], seconds=60
            )
            assert code == 0, output
            copied_at = len(load.placed)
            await until_placed(load, copied_at + 10)  # the load went on after the copy
        await server.wait_quiet()
    assert "orders: sqlite-backup" in output and "secret key: copy" in output, output

    code, output = await run_briefly(
        ["restore", str(backup), "--data-dir", str(restored)], seconds=60
    )
    assert code == 0, output
    assert "events to send again" in output, output

    async with served(restored) as server:  # its admin is in the copy
        await server.wait_quiet()
        async with httpx.AsyncClient(base_url=server.url, headers=server.admin) as client:
            records = await read_records(lambda path: all_pages(client, path))
            letters = await all_pages(client, "/api/admin/dead-letters")
    books = processor_books(restored)

    assert len(records.orders) >= BEFORE_BACKUP
    breaches = []
    for order_id, order in records.orders.items():
        payments, notices = records.payments_of[order_id], records.notices_of[order_id]
        breaches += [f"{order_id}: {b}" for b in order_breaches(order, payments, notices)]
        breaches += [f"{order_id}: {b}" for b in ledger_breaches(order, books.get(order_id))]
    assert breaches == []
    # Every SQLite store was copied as of one instant: no payment or notice names an order the
    # restored orders never had, and nothing was dead-lettered.
    unknown = (records.payments_of.keys() | records.notices_of.keys()) - records.orders.keys()
    assert unknown == set()
    assert letters == []
