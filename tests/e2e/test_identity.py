"""The gateway as front door: identity, ownership, admins, abuse limits, secrets."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest

from app.gateway.secrets import MissingSecretKey, resolve_secret_key
from app.main import create_app
from tests.support.seams import PASSWORD, Seams, fast_settings, running
from tests.support.server import run_create_admin

pytestmark = pytest.mark.anyio

SECRET = "s" * 48


async def test_a_token_for_the_right_password_and_one_answer_for_every_wrong_one() -> None:
    async with running(fast_settings(ephemeral="true")) as seams:
        user = await seams.register("Ada")
        ok = await seams.client.post(
            "/api/auth/token", json={"email": user["email"].upper(), "password": PASSWORD}
        )
        assert ok.status_code == 200
        assert ok.json()["token_type"] == "bearer"
        assert ok.json()["expires_in"] == 3600

        wrong = await seams.client.post(
            "/api/auth/token", json={"email": user["email"], "password": "not the one"}
        )
        unknown = await seams.client.post(
            "/api/auth/token", json={"email": "nobody@example.com", "password": "not the one"}
        )
        assert (wrong.status_code, unknown.status_code) == (401, 401)
        assert wrong.json()["detail"] == unknown.json()["detail"] == "wrong email or password"


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(None, id="no token"),
        pytest.param("Bearer not-a-jwt", id="garbage"),
        pytest.param("wrong-signature", id="wrong signature"),
        pytest.param("expired", id="expired"),
        pytest.param("alg-none", id="alg none"),
        pytest.param("other-algorithm", id="HS512 instead of HS256"),
    ],
)
async def test_every_api_route_refuses_a_missing_or_forged_token(authorization: str | None) -> None:
    async with running(fast_settings(ephemeral="true", secret_key=SECRET)) as seams:
        user = await seams.register("Bo")
        claims = {"sub": user["id"], "extras": {"role": "admin"}, "iat": datetime.now(UTC)}
        forged = {
            "wrong-signature": jwt.encode({**claims, "exp": _in(60)}, "x" * 48, "HS256"),
            "expired": jwt.encode({**claims, "exp": _in(-60)}, SECRET, "HS256"),
            "alg-none": jwt.encode({**claims, "exp": _in(60)}, None, "none"),
            "other-algorithm": jwt.encode({**claims, "exp": _in(60)}, SECRET, "HS512"),
        }
        header = forged.get(authorization or "", authorization)
        if authorization in forged:
            header = f"Bearer {header}"
        headers = {} if header is None else {"Authorization": header}
        for path in ("/api/orders", "/api/users", "/api/payments", "/api/admin/bus"):
            seams.client.headers.pop("Authorization", None)
            response = await seams.client.get(path, headers=headers)
            assert response.status_code == 401, (path, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")


def _in(seconds: int) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


async def test_registration_login_health_and_docs_need_no_token() -> None:
    async with running(fast_settings(ephemeral="true")) as seams:
        seams.client.headers.pop("Authorization")
        for path in ("/health", "/ready", "/schema", "/schema/openapi.json"):
            assert (await seams.client.get(path)).status_code == 200, path
        registered = await seams.client.post(
            "/api/users", json={"name": "Cy", "email": "cy@example.com", "password": PASSWORD}
        )
        assert registered.status_code == 201


async def test_an_order_for_someone_else_is_a_403_and_the_body_id_is_optional(
    seams: Seams,
) -> None:
    alice, bob = await seams.register("Alice"), await seams.register("Bob")
    body = {"currency": "EUR", "payment_token": "tok_visa",
            "items": [{"sku": "a", "quantity": 1, "unit_price": 10}]}  # fmt: skip

    for_bob = await seams.client.post(
        "/api/orders", json={**body, "user_id": bob["id"]}, headers=alice["headers"]
    )
    mine = await seams.client.post("/api/orders", json=body, headers=alice["headers"])

    assert for_bob.status_code == 403
    assert mine.status_code == 201
    assert mine.json()["user_id"] == alice["id"]


async def test_a_user_sees_only_their_own_things_and_others_are_404(seams: Seams) -> None:
    alice, bob = await seams.register("Alice"), await seams.register("Bob")
    bobs = await seams.place(bob, "tok_visa")
    await seams.settle()
    payment = (await seams.all_pages("/api/payments", order_id=bobs["id"]))[0]
    note = (await seams.all_pages("/api/notifications", order_id=bobs["id"]))[0]
    as_alice = alice["headers"]

    for path in (
        f"/api/users/{bob['id']}",
        f"/api/orders/{bobs['id']}",
        f"/api/payments/{payment['id']}",
        f"/api/notifications/{note['id']}",
    ):
        response = await seams.client.get(path, headers=as_alice)
        assert response.status_code == 404, path
    assert (
        await seams.client.post(f"/api/orders/{bobs['id']}/cancel", headers=as_alice)
    ).status_code == 404
    rename = await seams.client.patch(
        f"/api/users/{bob['id']}", json={"name": "X"}, headers=as_alice
    )
    assert rename.status_code == 404

    for path in ("/api/users", "/api/orders", "/api/payments", "/api/notifications"):
        listed = (await seams.client.get(path, headers=as_alice)).json()["items"]
        owners = {item.get("user_id", item.get("id")) for item in listed}
        assert owners <= {alice["id"]}, (path, listed)
    asked = await seams.client.get("/api/orders", params={"user_id": bob["id"]}, headers=as_alice)
    assert asked.json()["items"] == []


async def test_admin_routes_are_for_admins_and_admins_see_everything(seams: Seams) -> None:
    alice = await seams.register("Alice")
    await seams.place(alice, "tok_visa")
    await seams.settle()

    assert (await seams.client.get("/api/admin/bus", headers=alice["headers"])).status_code == 403
    assert (
        await seams.client.get("/api/admin/dead-letters", headers=alice["headers"])
    ).status_code == 403
    assert (await seams.client.get("/api/admin/bus")).status_code == 200  # the driver is an admin
    assert len((await seams.get("/api/orders"))["items"]) == 1

    topology = (await seams.client.get("/api/topology", headers=alice["headers"])).json()
    assert {m["store"]["url"] for m in topology["modules"]} == {"(admins only)"}


@pytest.mark.slow  # runs python -m app create-admin twice
async def test_create_admin_makes_an_admin_who_can_log_in(tmp_path: Path) -> None:
    created = await run_create_admin(tmp_path, "root@example.com", password="long enough")
    assert created.returncode == 0, created.stderr.decode()
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600

    async with running(fast_settings(data_dir=str(tmp_path))) as seams:
        seams.client.headers.pop("Authorization")
        login = await seams.log_in("root@example.com", "long enough")
        assert (
            await seams.client.get("/api/admin/bus", headers=login["headers"])
        ).status_code == 200

    short = await run_create_admin(tmp_path, "root@example.com", password="short")
    assert short.returncode == 2
    assert "8-128 characters" in short.stderr.decode()


async def test_the_rate_limit_answers_429_with_retry_after_and_ratelimit_headers() -> None:
    async with running(fast_settings(ephemeral="true", rate_limit_per_minute="4")) as seams:
        # Anonymous requests count per client address: two registrations and two logins.
        user, other = await seams.register("Di"), await seams.register("Ed")
        answers = [await seams.client.get("/api/orders", headers=user["headers"]) for _ in range(5)]
        assert [a.status_code for a in answers] == [200, 200, 200, 200, 429]
        limited = answers[-1]
        assert limited.headers["content-type"].startswith("application/problem+json")
        assert int(limited.headers["retry-after"]) > 0
        assert limited.headers["ratelimit-limit"] == "4"
        # Another caller has its own budget.
        assert (await seams.client.get("/api/orders", headers=other["headers"])).status_code == 200


async def test_failed_logins_have_their_own_stricter_limit() -> None:
    async with running(fast_settings(ephemeral="true", login_attempts_per_minute="3")) as seams:
        user = await seams.register("Flo")
        wrong = {"email": user["email"], "password": "not the one"}
        answers = [await seams.client.post("/api/auth/token", json=wrong) for _ in range(4)]
        assert [a.status_code for a in answers] == [401, 401, 401, 429]
        assert int(answers[-1].headers["retry-after"]) >= 1
        right = {"email": user["email"], "password": PASSWORD}
        assert (await seams.client.post("/api/auth/token", json=right)).status_code == 429


async def test_the_password_and_its_hash_never_leave_the_server(
    seams: Seams, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    user = await seams.register("Gil")
    changed = await seams.client.patch(
        f"/api/users/{user['id']}", json={"password": "another secret"}, headers=user["headers"]
    )
    bodies = [
        changed.text,
        (await seams.client.get(f"/api/users/{user['id']}")).text,
        (await seams.client.get("/api/users")).text,
    ]
    for text in [*bodies, caplog.text]:
        for secret in (PASSWORD, "another secret", "$argon2"):
            assert secret not in text


async def test_an_unexpected_error_is_a_500_without_detail_and_logged_in_full(
    seams: Seams, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.modules.orders.service import OrderService

    async def crash(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals at 0xdeadbeef")

    monkeypatch.setattr(OrderService, "page", crash)
    response = await seams.client.get("/api/orders")

    assert response.status_code == 500
    assert "deadbeef" not in response.text and "Traceback" not in response.text
    assert response.json()["request_id"] == response.headers["x-request-id"]
    assert "secret internals at 0xdeadbeef" in caplog.text
    assert "Traceback" in caplog.text


@pytest.mark.slow  # runs python -m app
def test_production_refuses_to_start_without_a_secret_key() -> None:
    with pytest.raises(MissingSecretKey, match="APP_SECRET_KEY"):
        create_app(fast_settings(env="production", ephemeral="true"))
    result = subprocess.run(
        [sys.executable, "-m", "app", "--ephemeral"],
        env={**os.environ, "APP_ENV": "production"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "APP_SECRET_KEY" in result.stderr


def test_development_keeps_a_generated_key_across_restarts(tmp_path: Path) -> None:
    settings = fast_settings(data_dir=str(tmp_path))
    first = resolve_secret_key(settings)
    assert resolve_secret_key(settings) == first
    assert resolve_secret_key(fast_settings(ephemeral="true")) != first


async def test_cors_origins_are_configurable() -> None:
    settings = fast_settings(ephemeral="true", cors_origins="https://shop.example")
    async with running(settings) as seams:
        allowed = await seams.client.options(
            "/api/orders",
            headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "GET"},
        )
        assert allowed.headers["access-control-allow-origin"] == "https://shop.example"
        other = await seams.client.options(
            "/api/orders",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        )
        assert other.headers.get("access-control-allow-origin") != "https://evil.example"


async def test_sql_and_operator_text_is_stored_as_data(seams: Seams) -> None:
    user = await seams.register("Hal")
    name = "Robert'); DROP TABLE users;--"
    changed = await seams.client.patch(
        f"/api/users/{user['id']}", json={"name": name}, headers=user["headers"]
    )
    assert changed.json()["name"] == name
    for value in ('{"$gt": ""}', "$where", "' OR 1=1 --"):
        listed = await seams.client.get("/api/orders", params={"user_id": value})
        assert listed.status_code == 200 and listed.json()["items"] == []
    assert (await seams.get(f"/api/users/{user['id']}"))["name"] == name
