"""Logins through the gateway cannot step around their limits: every spelling of an address
shares its account's failed-login limits, one client trying many addresses is stopped, many
clients guessing one address are stopped, and a flood of logins cannot queue up the CPU a real
user's login needs."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import httpx
import pytest

from tests.support.seams import PASSWORD, Seams, fast_settings, running

pytestmark = pytest.mark.anyio

# Client addresses are labels the in-process transport hands the app (no packet is sent).
ATTACKER = "198.51.100.66"
REAL_USER = "192.0.2.10"


@asynccontextmanager
async def client_from(seams: Seams, address: str) -> AsyncIterator[httpx.AsyncClient]:
    """An anonymous client whose requests come from `address`."""
    transport = httpx.ASGITransport(app=cast(Any, seams.app), client=(address, 40_000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver.local") as c:
        yield c


async def log_in(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post("/api/auth/token", json={"email": email, "password": password})


def spellings_of(email: str) -> list[str]:
    local, domain = email.split("@")
    fullwidth = "".join(chr(ord(ch) + 0xFEE0) if ch.isalnum() else ch for ch in local)
    return [
        " " + email,
        "\t" + email,
        "\u3000" + email,  # ideographic space
        "\u00a0" + email + "\u00a0",  # no-break space
        "\u200b" + email,  # zero-width space
        email[:2] + "\u200d" + email[2:],  # zero-width joiner inside
        email.upper(),
        f"{fullwidth}@{domain}",
    ]


async def test_every_spelling_of_an_email_shares_its_failed_login_limit() -> None:
    async with running(fast_settings(ephemeral="true", login_attempts_per_minute="3")) as seams:
        user = await seams.register("Flo")
        async with client_from(seams, ATTACKER) as attacker:
            answers = [
                await log_in(attacker, spelling, "not the one")
                for spelling in spellings_of(user["email"])
            ]

        assert [a.status_code for a in answers] == [401] * 3 + [429] * 5
        assert all(int(a.headers["retry-after"]) >= 1 for a in answers[3:])


async def test_a_padded_email_with_the_right_password_is_refused_while_locked() -> None:
    async with running(fast_settings(ephemeral="true", login_attempts_per_minute="3")) as seams:
        user = await seams.register("Gus")
        async with client_from(seams, ATTACKER) as attacker:
            for _ in range(3):
                assert (await log_in(attacker, user["email"], "wrong")).status_code == 401
            assert (await log_in(attacker, user["email"], PASSWORD)).status_code == 429

            for spelling in spellings_of(user["email"]):
                answer = await log_in(attacker, spelling, PASSWORD)
                assert answer.status_code == 429, ascii(spelling)
                assert "access_token" not in answer.text


async def test_registering_another_spelling_of_a_taken_email_is_a_conflict() -> None:
    async with running(fast_settings(ephemeral="true")) as seams:
        user = await seams.register("Hal")
        local, domain = user["email"].split("@")
        for spelling in (
            "\u200b" + user["email"],
            local[:2] + "\u00ad" + local[2:] + "@" + domain,
            user["email"].upper(),
            "".join(chr(ord(ch) + 0xFEE0) for ch in local) + "@" + domain,
        ):
            answer = await seams.client.post(
                "/api/users", json={"name": "Mallory", "email": spelling, "password": PASSWORD}
            )
            assert answer.status_code == 409, ascii(spelling)


async def test_one_client_failing_on_many_emails_is_stopped_across_them() -> None:
    settings = fast_settings(ephemeral="true", login_failures_per_client_per_minute="5")
    async with (
        running(settings) as seams,
        client_from(seams, ATTACKER) as attacker,
        client_from(seams, REAL_USER) as neighbour,
    ):
        answers = [await log_in(attacker, f"guess.{n}@example.com", "wrong") for n in range(6)]

        assert [a.status_code for a in answers] == [401] * 5 + [429]
        assert "from this client" in answers[-1].json()["detail"]
        assert int(answers[-1].headers["retry-after"]) >= 1
        assert (await log_in(neighbour, "guess.9@example.com", "wrong")).status_code == 401


async def test_many_clients_guessing_one_email_are_stopped_together() -> None:
    settings = fast_settings(ephemeral="true", login_failures_per_email_per_minute="4")
    async with running(settings) as seams:
        user = await seams.register("Ida")
        statuses = []
        for n in range(5):
            async with client_from(seams, f"203.0.113.{n + 1}") as client:
                statuses.append((await log_in(client, user["email"], "wrong")).status_code)

        assert statuses == [401] * 4 + [429]
        # Another account is not affected.
        other = await seams.register("Jo")
        async with client_from(seams, "203.0.113.99") as client:
            assert (await log_in(client, other["email"], PASSWORD)).status_code == 200


@pytest.mark.slow
@pytest.mark.serial  # a latency bound: other tests' work beside it would be measured too
async def test_a_flood_of_logins_does_not_delay_a_real_users_login_past_a_second() -> None:
    """300 logins with made-up emails, 64 in flight, against the real argon2id parameters."""
    settings = fast_settings(ephemeral="true", password_hashing="argon2id")
    async with (
        running(settings) as seams,
        client_from(seams, ATTACKER) as attacker,
        client_from(seams, REAL_USER) as real,
    ):
        user = await seams.register("Kim")
        in_flight = asyncio.Semaphore(64)
        sent = 0
        full_swing = asyncio.Event()
        flood_answers: Counter[int] = Counter()
        slowest_refusal = 0.0

        async def guess() -> None:
            nonlocal sent, slowest_refusal
            async with in_flight:
                sent += 1
                if sent == 64:
                    full_swing.set()
                started = time.perf_counter()
                answer = await log_in(attacker, f"{uuid.uuid4().hex}@example.com", "guess")
                flood_answers[answer.status_code] += 1
                if answer.status_code in (429, 503):
                    slowest_refusal = max(slowest_refusal, time.perf_counter() - started)

        flood_started = time.perf_counter()
        flood = [asyncio.create_task(guess()) for _ in range(300)]
        try:
            async with asyncio.timeout(5):
                await full_swing.wait()
            started = time.perf_counter()
            async with asyncio.timeout(30):
                answer = await log_in(real, user["email"], PASSWORD)
            real_seconds = time.perf_counter() - started
            print(f"\nreal login during the flood: {answer.status_code} in {real_seconds:.3f} s")
            assert answer.status_code == 200, answer.text
            assert real_seconds < 1.0
            async with asyncio.timeout(60):
                await asyncio.gather(*flood)
        finally:
            for task in flood:
                task.cancel()

        print(
            f"flood of 300: {dict(flood_answers)} in {time.perf_counter() - flood_started:.2f} s,"
            f" slowest 429/503 {slowest_refusal:.3f} s"
        )
        assert set(flood_answers) <= {401, 429, 503}
        assert flood_answers[401] < 300  # the excess was refused, not queued


@pytest.mark.slow
async def test_a_flood_from_many_addresses_is_refused_at_once_beyond_the_hashing_bound() -> None:
    """300 logins from 300 addresses (no per-client limit bites), 64 in flight, real argon2id:
    only a few are hashed at a time; the excess is a 503 with Retry-After at once, and nothing
    is left queued: a real user's login right after gets in."""
    settings = fast_settings(ephemeral="true", password_hashing="argon2id")
    async with running(settings) as seams, client_from(seams, REAL_USER) as real:
        user = await seams.register("Lou")
        in_flight = asyncio.Semaphore(64)
        answers: Counter[int] = Counter()
        slowest_refusal = 0.0

        async def guess(number: int) -> None:
            nonlocal slowest_refusal
            async with in_flight, client_from(seams, f"203.0.113.{number % 250}") as bot:
                started = time.perf_counter()
                answer = await log_in(bot, f"{uuid.uuid4().hex}@example.com", "guess")
                answers[answer.status_code] += 1
                if answer.status_code == 503:
                    assert answer.headers["retry-after"] == "1"
                    slowest_refusal = max(slowest_refusal, time.perf_counter() - started)

        flood = [asyncio.create_task(guess(number)) for number in range(300)]
        try:
            async with asyncio.timeout(60):
                await asyncio.gather(*flood)
        finally:
            for task in flood:
                task.cancel()
        print(f"\nflood from 250 addresses: {dict(answers)}, slowest 503 {slowest_refusal:.3f} s")
        assert set(answers) <= {401, 429, 503}
        assert answers[503] > 200  # most were refused without hashing
        assert slowest_refusal < 1.0
        answer = await log_in(real, user["email"], PASSWORD)
        assert answer.status_code == 200, answer.text
