"""While the broker is away the split gateway cannot ask for a user's credentials: it checks
tokens against the last ones it knows, but only for APP_CREDENTIALS_AWAY_SECONDS after it
last read or heard them, so a token revoked during an outage stops working within that
bound (docs/decisions/0040). A real private nats-server, killed by the test."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest
from litestar.exceptions import ServiceUnavailableException

from app.kernel.credentials import TTL_SECONDS, CurrentCredentials
from app.kernel.identity import Credentials
from app.split.credentials import CredentialsAnswerer, CredentialsOverNats
from tests.support.nats import nats_server

pytestmark = [pytest.mark.anyio, pytest.mark.services]

ADA = Credentials(generation=1, role="user")
AWAY = TTL_SECONDS + 1.0  # APP_CREDENTIALS_AWAY_SECONDS, here


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_last_known_credentials_count_only_for_the_bound_while_the_broker_is_away(
    tmp_path: Path,
) -> None:
    users = {"ada": ADA}

    async def read(user_id: str) -> Credentials | None:
        return users.get(user_id)

    with nats_server(tmp_path / "nats") as server:
        answerer = CredentialsAnswerer(server.url, CurrentCredentials(read))
        gateway = CredentialsOverNats(server.url, away_seconds=AWAY)
        await answerer.start()
        await gateway.start()
        try:
            assert await gateway.current("ada") == ADA  # asked over the broker
            read_at = time.monotonic()
            server.kill()
            for _ in range(100):  # until nats-py has noticed
                if not gateway._broker.connected:
                    break
                await anyio.sleep(0.05)
            assert not gateway._broker.connected

            await anyio.sleep(max(0.0, read_at + TTL_SECONDS + 0.2 - time.monotonic()))
            assert await gateway.current("ada") == ADA  # past the TTL: last known, in bound
            with pytest.raises(ServiceUnavailableException, match="cannot be checked"):
                await gateway.current("bob")  # never heard of

            await anyio.sleep(max(0.0, read_at + AWAY + 0.2 - time.monotonic()))
            with pytest.raises(ServiceUnavailableException) as refused:
                await gateway.current("ada")
            assert "APP_CREDENTIALS_AWAY_SECONDS" in refused.value.detail
            assert refused.value.headers == {"Retry-After": "1"}
        finally:
            await gateway.stop()
            await answerer.stop()
