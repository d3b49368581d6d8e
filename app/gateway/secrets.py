"""The key that signs access tokens (docs/decisions/0001-secret-key.md).

`APP_SECRET_KEY` wins. Without it, `--ephemeral` uses a random key per process, and the
data dir keeps a generated one (file mode 0600) so tokens survive a restart. Only
`APP_ENV=production` refuses to start without `APP_SECRET_KEY`, or with a guessable one
(elsewhere a guessable key is used, with a warning).
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from app.kernel.data_dir import make_private_dir
from app.kernel.settings import Settings

log = logging.getLogger("app.gateway")

KEY_FILE = "secret_key"
MIN_LENGTH = 32
# A random key of 32 characters has ~14 different ones even from 16 hex digits (fewer than
# 10 about once in 10,000); "a" * 32, "abcd" * 8 or a word repeated have far fewer.
MIN_DIFFERENT_CHARACTERS = 10
HOW_TO_MAKE_ONE = "python -c 'import secrets; print(secrets.token_urlsafe(48))'"


class MissingSecretKey(ValueError):
    pass


def guessable(key: str) -> str | None:
    """Why `key` is too easy to guess to sign tokens with, or None."""
    if len(key) < MIN_LENGTH:
        return f"it has {len(key)} characters, fewer than {MIN_LENGTH}"
    different = len(set(key))
    if different < MIN_DIFFERENT_CHARACTERS:
        return (
            f"it repeats {different} different characters (a random key has at least "
            f"{MIN_DIFFERENT_CHARACTERS})"
        )
    return None


def resolve_secret_key(settings: Settings) -> str:
    if settings.secret_key:
        weakness = guessable(settings.secret_key)
        if weakness is None:
            return settings.secret_key
        if len(settings.secret_key) < MIN_LENGTH or settings.env == "production":
            raise MissingSecretKey(
                f"APP_SECRET_KEY is too easy to guess: {weakness}. Make one with "
                f"`{HOW_TO_MAKE_ONE}`"
            )
        log.warning(
            "APP_SECRET_KEY is too easy to guess (%s); APP_ENV=production refuses it. "
            "Make one with `%s`",
            weakness,
            HOW_TO_MAKE_ONE,
        )
        return settings.secret_key
    if settings.env == "production":
        raise MissingSecretKey(
            f"APP_ENV=production needs APP_SECRET_KEY (at least {MIN_LENGTH} random "
            f"characters): make one with `{HOW_TO_MAKE_ONE}`"
        )
    if settings.ephemeral:
        return secrets.token_urlsafe(48)
    path = Path(settings.data_dir).expanduser() / KEY_FILE
    if path.exists():
        return path.read_text().strip()
    make_private_dir(path.parent)  # 0700, whatever the umask: the key must not be readable
    # Written aside, then linked into place: the file appears whole or not at all, and when
    # several processes start on one data dir (split mode) the first link wins for all.
    key = secrets.token_urlsafe(48)
    draft = path.with_name(f".{KEY_FILE}.{os.getpid()}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(key)
    try:
        os.link(draft, path)
    except FileExistsError:
        return path.read_text().strip()
    finally:
        draft.unlink()
    log.warning(
        "no APP_SECRET_KEY: generated one in %s (mode 0600); set APP_SECRET_KEY in production",
        path,
    )
    return key
