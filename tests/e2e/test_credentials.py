"""Credentials: a token dies with the password, email or role it was issued for; the role an
admin route trusts is the users store's; only `Bearer` tokens pass; a refused token is
logged, counted and rate-limited like any other request; create-admin never hands the
admin role to an account someone else registered first."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import jwt
import msgspec
import pytest

from app.modules.users.store import UsersStore
from tests.support.seams import PASSWORD, Seams, fast_settings, running
from tests.support.server import run_create_admin, server_env
from tests.support.work import HandedOff

pytestmark = pytest.mark.anyio

SECRET = "k" * 48
REVOKED_WITHIN_SECONDS = 3.0  # the gateway re-reads a user's credentials at least every 1 s


@pytest.mark.slow  # runs python -m app create-admin
async def test_create_admin_refuses_an_email_a_non_admin_registered_first(tmp_path: Path) -> None:
    async with running(fast_settings(data_dir=str(tmp_path))) as seams:
        seams.client.headers.pop("Authorization")
        registered = await seams.client.post(
            "/api/users",
            json={"name": "Mallory", "email": "ops-admin@example.com", "password": PASSWORD},
        )
        assert registered.status_code == 201
        attacker = await seams.log_in("ops-admin@example.com")

    refused = await run_create_admin(tmp_path, "ops-admin@example.com", password="admin pass 1")

    assert refused.returncode == 2
    error = refused.stderr.decode()
    assert "ops-admin@example.com" in error and "--promote" in error
    assert "Traceback" not in error
    async with running(fast_settings(data_dir=str(tmp_path))) as seams:
        seams.client.headers.pop("Authorization")
        assert (
            await seams.client.get("/api/admin/bus", headers=attacker["headers"])
        ).status_code == 403
        assert (await seams.client.post(
            "/api/auth/token", json={"email": "ops-admin@example.com", "password": "admin pass 1"}
        )).status_code == 401  # fmt: skip


@pytest.mark.slow  # runs python -m app create-admin
async def test_create_admin_promote_names_the_account_and_kills_its_earlier_tokens(
    tmp_path: Path,
) -> None:
    async with running(fast_settings(data_dir=str(tmp_path))) as seams:
        seams.client.headers.pop("Authorization")
        user = await seams.client.post(
            "/api/users",
            json={"name": "Mallory", "email": "ops-admin@example.com", "password": PASSWORD},
        )
        old = await seams.log_in("ops-admin@example.com")

    promoted = await run_create_admin(
        tmp_path, "ops-admin@example.com", "--promote", password="admin pass 1"
    )

    assert promoted.returncode == 0, promoted.stderr.decode()
    out = promoted.stdout.decode()
    assert f"promoting Mallory ops-admin@example.com ({user.json()['id']})" in out
    assert str(tmp_path) in out  # which data dir it wrote to
    async with running(fast_settings(data_dir=str(tmp_path))) as seams:
        seams.client.headers.pop("Authorization")
        stale = await seams.client.get("/api/admin/bus", headers=old["headers"])
        assert stale.status_code == 401
        new = await seams.log_in("ops-admin@example.com", "admin pass 1")
        assert (await seams.client.get("/api/admin/bus", headers=new["headers"])).status_code == 200


@pytest.mark.slow  # runs python -m app create-admin
async def test_create_admin_says_where_it_wrote(tmp_path: Path) -> None:
    created = await run_create_admin(tmp_path, "root@example.com", password="admin pass 1")

    assert created.returncode == 0, created.stderr.decode()
    out = created.stdout.decode()
    assert str(tmp_path) in out
    assert "users.db" in out  # the users store it wrote to


@pytest.mark.slow  # runs python -m app create-admin
def test_create_admin_without_a_terminal_or_password_stdin_is_a_one_line_error(
    tmp_path: Path,
) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "app",
            "create-admin",
            "--email",
            "root@example.com",
            "--data-dir",
            str(tmp_path),
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=server_env(),
        timeout=60,
    )

    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "--password-stdin" in result.stderr
    assert not (tmp_path / "users.db").exists()


def test_the_create_admin_prompt_asks_twice_and_refuses_a_mismatch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import getpass

    from app.__main__ import main

    answers = iter(["first password", "second password"])
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": next(answers))

    status = main(["create-admin", "--email", "root@example.com", "--data-dir", str(tmp_path)])

    assert status == 2
    assert "do not match" in capsys.readouterr().err
    assert not (tmp_path / "users.db").exists()


async def test_changing_the_password_needs_the_current_one_and_kills_earlier_tokens(
    seams: Seams,
) -> None:
    user = await seams.register("Ada")
    path = f"/api/users/{user['id']}"

    missing = await seams.client.patch(
        path, json={"password": "new secret 1"}, headers=user["headers"]
    )
    wrong = await seams.client.patch(
        path,
        json={"password": "new secret 1", "current_password": "not the one"},
        headers=user["headers"],
    )
    assert missing.status_code == 400
    assert "current_password" in missing.json()["detail"]
    assert wrong.status_code == 403
    assert (await seams.client.get(path, headers=user["headers"])).status_code == 200

    changed = await seams.client.patch(
        path,
        json={"password": "new secret 1", "current_password": PASSWORD},
        headers=user["headers"],
    )

    assert changed.status_code == 200, changed.text
    stale = await seams.client.get(path, headers=user["headers"])
    assert stale.status_code == 401
    assert "log in again" in stale.json()["detail"]
    fresh = await seams.log_in(user["email"], "new secret 1")
    assert (await seams.client.get(path, headers=fresh["headers"])).status_code == 200


async def test_changing_the_email_needs_the_current_password_and_kills_earlier_tokens(
    seams: Seams,
) -> None:
    user = await seams.register("Bo")
    path = f"/api/users/{user['id']}"
    new_email = f"renamed.{user['id']}@example.com"

    missing = await seams.client.patch(path, json={"email": new_email}, headers=user["headers"])
    assert missing.status_code == 400
    assert "current_password" in missing.json()["detail"]

    changed = await seams.client.patch(
        path, json={"email": new_email, "current_password": PASSWORD}, headers=user["headers"]
    )

    assert changed.status_code == 200, changed.text
    assert (await seams.client.get(path, headers=user["headers"])).status_code == 401
    fresh = await seams.log_in(new_email)
    assert (await seams.client.get(path, headers=fresh["headers"])).status_code == 200


async def test_a_name_change_needs_no_password_and_keeps_tokens(seams: Seams) -> None:
    user = await seams.register("Cy")
    path = f"/api/users/{user['id']}"

    renamed = await seams.client.patch(path, json={"name": "Cyril"}, headers=user["headers"])

    assert renamed.status_code == 200
    assert (await seams.client.get(path, headers=user["headers"])).status_code == 200


async def test_an_admin_cannot_change_another_users_password_without_it(seams: Seams) -> None:
    user = await seams.register("Di")

    taken = await seams.client.patch(
        f"/api/users/{user['id']}", json={"password": "admin chose 1"}
    )  # the driver's client is an admin

    assert taken.status_code == 400
    assert (
        await seams.client.get(f"/api/users/{user['id']}", headers=user["headers"])
    ).status_code == 200


async def test_an_admin_demoted_in_the_store_loses_the_admin_routes(tmp_path: Path) -> None:
    settings = fast_settings(data_dir=str(tmp_path))
    async with running(settings) as seams:
        assert (await seams.client.get("/api/admin/bus")).status_code == 200
        # Another process (an operator, a users replica) demotes the driver's admin.
        other = UsersStore(settings.store_url("users"))
        await other.open()
        try:
            admin = await other.get(seams.admin_id)
            assert admin is not None and admin.role == "admin"
            demoted = msgspec.structs.replace(admin, role="user", version=admin.version + 1)
            async with other.unit_of_work(HandedOff("users")) as work:
                assert await other.update(work, demoted, expected_version=admin.version)
        finally:
            await other.close()

        statuses = await _until(
            lambda: seams.client.get("/api/admin/bus"), lambda r: r.status_code != 200
        )

        assert statuses.status_code in (401, 403)


async def _until(request: Any, done: Any) -> Any:
    """The first answer `done` accepts, asked again until REVOKED_WITHIN_SECONDS have passed."""
    deadline = time.monotonic() + REVOKED_WITHIN_SECONDS
    while True:
        answer = await request()
        if done(answer) or time.monotonic() > deadline:
            return answer
        await anyio.sleep(0.05)


@pytest.mark.parametrize("scheme", ["Basic", "Token", "bearer-ish", ""])
async def test_only_the_bearer_scheme_carries_a_token(scheme: str) -> None:
    async with running(fast_settings(ephemeral="true")) as seams:
        user = await seams.register("Ed")
        seams.client.headers.pop("Authorization")

        answer = await seams.client.get(
            "/api/orders", headers={"Authorization": f"{scheme} {user['token']}"}
        )
        good = await seams.client.get(
            "/api/orders", headers={"Authorization": f"bEaReR {user['token']}"}
        )

        assert answer.status_code == 401, answer.text
        assert answer.headers["www-authenticate"].startswith('Bearer realm="seams"')
        assert good.status_code == 200  # the scheme's name is case-insensitive (RFC 9110)


async def test_an_expired_token_says_so_and_401s_carry_www_authenticate() -> None:
    async with running(fast_settings(ephemeral="true", secret_key=SECRET)) as seams:
        user = await seams.register("Flo")
        seams.client.headers.pop("Authorization")
        now = datetime.now(UTC)
        expired = jwt.encode(
            {"sub": user["id"], "iat": now - timedelta(hours=2), "exp": now - timedelta(hours=1),
             "extras": {"role": "user", "gen": 1}},
            SECRET,
            "HS256",
        )  # fmt: skip

        late = await seams.client.get("/api/orders", headers={"Authorization": f"Bearer {expired}"})
        none = await seams.client.get("/api/orders")
        forged = await seams.client.get("/api/orders", headers={"Authorization": "Bearer x.y.z"})

    assert late.status_code == 401
    assert late.headers["content-type"].startswith("application/problem+json")
    assert "expired" in late.json()["detail"] and "log in again" in late.json()["detail"]
    challenge = late.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="seams"')
    assert 'error="invalid_token"' in challenge and "error_description=" in challenge
    assert none.status_code == 401
    assert none.headers["www-authenticate"] == 'Bearer realm="seams"'
    assert forged.status_code == 401
    assert 'error="invalid_token"' in forged.headers["www-authenticate"]


async def test_a_refused_token_is_logged_counted_and_rate_limited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="app.access")
    async with running(fast_settings(ephemeral="true", rate_limit_per_minute="3")) as seams:
        seams.client.headers.pop("Authorization")
        before = _refused_count((await seams.client.get("/metrics")).text)

        answers = [
            await seams.client.get("/api/orders", headers={"Authorization": "Bearer forged"})
            for _ in range(4)
        ]

        after = _refused_count((await seams.client.get("/metrics")).text)
    assert [a.status_code for a in answers] == [401, 401, 401, 429]
    assert after - before == 3
    refused_lines = [
        r for r in caplog.records if r.name == "app.access" and "401" in r.getMessage()
    ]
    assert len(refused_lines) == 3


def _refused_count(metrics: str) -> float:
    total = 0.0
    for line in metrics.splitlines():
        if (
            line.startswith("seams_requests_total{")
            and 'path="/api/orders"' in line
            and re.search(r'status_code="401"', line)
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_a_wrong_password_at_login_is_a_401_with_the_bearer_challenge() -> None:
    async with running(fast_settings(ephemeral="true")) as seams:
        user = await seams.register("Gil")

        wrong = await seams.client.post(
            "/api/auth/token", json={"email": user["email"], "password": "not the one"}
        )

    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"] == 'Bearer realm="seams"'


async def test_wrong_current_passwords_count_as_failed_logins() -> None:
    async with running(fast_settings(ephemeral="true", login_attempts_per_minute="2")) as seams:
        user = await seams.register("Hu")
        wrong = {"password": "new secret 1", "current_password": "not the one"}

        answers = [
            await seams.client.patch(
                f"/api/users/{user['id']}", json=wrong, headers=user["headers"]
            )
            for _ in range(3)
        ]

    assert [a.status_code for a in answers] == [403, 403, 429]
