"""`python -m app migrate [--check]` and the start-up rules, as an operator meets them
(docs/decisions/0028-migrations.md)."""

from __future__ import annotations

import secrets
import sqlite3
from pathlib import Path

import pytest

from app.modules.payments.store import PaymentsStore
from tests.support.release_tables import migrations_of, release_tables
from tests.support.server import run_briefly

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


PAYMENTS_HEAD = migrations_of(PaymentsStore("sqlite://")).head


def a_payments_store_of_the_release_before_migrations(data_dir: Path) -> None:
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    url = f"sqlite:///{data_dir / 'payments.db'}"
    release_tables(PaymentsStore(url), url)
    (data_dir / "payments.db").chmod(0o600)


async def test_check_reports_each_store_and_exits_1_while_one_is_behind(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    a_payments_store_of_the_release_before_migrations(data_dir)
    code, output = await run_briefly(
        ["migrate", "--check", "--data-dir", str(data_dir)], seconds=60
    )
    assert code == 1, output
    assert f"payments: at unversioned, pending up to {PAYMENTS_HEAD}" in output
    assert "users: empty, will be created at" in output
    assert "orders: empty" in output and "bus: empty" in output

    code, output = await run_briefly(["migrate", "--data-dir", str(data_dir)], seconds=60)
    assert code == 0, output
    assert f"payments: unversioned -> {PAYMENTS_HEAD} (head)" in output

    code, output = await run_briefly(
        ["migrate", "--check", "--data-dir", str(data_dir)], seconds=60
    )
    assert code == 0, output
    assert f"payments: at {PAYMENTS_HEAD} (head)" in output


async def test_production_refuses_to_start_on_a_store_behind_naming_what_to_run(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "var"
    a_payments_store_of_the_release_before_migrations(data_dir)
    production = {"APP_ENV": "production", "APP_SECRET_KEY": secrets.token_urlsafe(48)}
    code, output = await run_briefly(["--data-dir", str(data_dir)], env=production, seconds=60)
    assert code == 2, output
    assert (
        f"the payments store is at revision unversioned and the code's head is {PAYMENTS_HEAD}"
    ) in output
    assert "python -m app migrate" in output
    tables = sqlite3.connect(data_dir / "payments.db").execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'"
    )
    assert "alembic_version_payments" not in {row[0] for row in tables}  # nothing applied


async def test_a_store_newer_than_the_code_is_refused_in_development_too(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    code, output = await run_briefly(["migrate", "--data-dir", str(data_dir)], seconds=60)
    assert code == 0, output
    db = sqlite3.connect(data_dir / "notifications.db")
    db.execute("UPDATE alembic_version_notifications SET version_num = '0999'")
    db.commit()
    db.close()
    code, output = await run_briefly(
        ["--data-dir", str(data_dir)], env={"APP_ENV": "development"}, seconds=60
    )
    assert code == 2, output
    assert "notifications store is at revision 0999, which this code does not know" in output
    code, output = await run_briefly(
        ["migrate", "--check", "--data-dir", str(data_dir)], seconds=60
    )
    assert code == 1 and "notifications: at 0999, newer than this code" in output, output
