"""The key that signs tokens: production refuses one an attacker could guess; development
warns about it and goes on."""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys

import pytest

from app.gateway.secrets import MissingSecretKey, resolve_secret_key
from app.kernel.settings import Settings

HOW_TO_MAKE_ONE = "python -c 'import secrets; print(secrets.token_urlsafe(48))'"
GUESSABLE = [
    "a" * 32,
    "ab" * 16,
    "abcd" * 8,
    "password" * 4,
    "changeme-changeme-changeme-changeme",
    "0" * 64,
]


def settings(env: str, key: str) -> Settings:
    return Settings.from_env({"APP_ENV": env, "APP_SECRET_KEY": key, "APP_EPHEMERAL": "true"})


@pytest.mark.parametrize("key", GUESSABLE)
def test_production_refuses_a_key_with_too_few_different_characters(key: str) -> None:
    with pytest.raises(MissingSecretKey) as refused:
        resolve_secret_key(settings("production", key))

    assert "APP_SECRET_KEY" in str(refused.value)
    assert HOW_TO_MAKE_ONE in str(refused.value)


def test_production_refuses_a_short_key_and_says_how_to_make_one() -> None:
    with pytest.raises(MissingSecretKey) as refused:
        resolve_secret_key(settings("production", secrets.token_urlsafe(16)))

    assert HOW_TO_MAKE_ONE in str(refused.value)


@pytest.mark.parametrize(
    "make", [lambda: secrets.token_urlsafe(32), lambda: secrets.token_urlsafe(48)]
)
def test_production_accepts_every_key_the_standard_recipe_makes(make: object) -> None:
    assert callable(make)
    for _ in range(2_000):
        key = make()
        assert resolve_secret_key(settings("production", key)) == key


def test_development_warns_about_a_guessable_key_and_uses_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="app.gateway"):
        key = resolve_secret_key(settings("development", "a" * 32))

    assert key == "a" * 32
    assert any(
        "APP_SECRET_KEY" in record.getMessage() and HOW_TO_MAKE_ONE in record.getMessage()
        for record in caplog.records
    ), caplog.records


@pytest.mark.slow  # runs python -m app
def test_python_m_app_in_production_exits_with_the_reason_for_a_guessable_key() -> None:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("APP_")}
    environment |= {"APP_ENV": "production", "APP_SECRET_KEY": "a" * 32}
    try:
        result = subprocess.run(
            [sys.executable, "-m", "app", "--ephemeral", "--port", "0"],
            env=environment,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired as still_serving:
        raise AssertionError("it served with a guessable key") from still_serving

    assert result.returncode == 2, result.stderr
    assert HOW_TO_MAKE_ONE in result.stderr, result.stderr
