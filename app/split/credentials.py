"""Users' credentials across the processes of the split mode, over NATS request-reply.

The gateway process keeps no store, yet it checks every token against the current credentials
of the account it names (app/gateway/auth.py). A process of the module owning credentials (the
one whose Assembly offers them) answers `seams.credentials.get`
(the user id in, `null` or {generation, role} out; one replica answers each request) from
its store, and publishes `seams.credentials.changed` after each change it commits. The
gateway keeps what it hears in the same short-lived memory as the monolith's (at most
TTL_SECONDS old), updated at once by a change it hears of.

While the broker is away the gateway cannot ask: a token is checked against its account's
credentials as last known, for at most APP_CREDENTIALS_AWAY_SECONDS after they were last
read or heard (a change made meanwhile, a revocation too, counts once the broker is back or
that bound has passed); after it, and for an account it never heard of, the token is a 503
naming the broker (docs/decisions/0032, 0040).
"""

from __future__ import annotations

import asyncio
import logging
import os

import msgspec
import nats
import nats.errors
from litestar.exceptions import ServiceUnavailableException
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from app.kernel.credentials import CurrentCredentials
from app.kernel.identity import Credentials
from app.split.nats import BrokerConnection

log = logging.getLogger("app.split.credentials")

ASK = "seams.credentials.get"
CHANGED = "seams.credentials.changed"
ANSWERERS = "seams-credentials"  # the queue group: one process answers each question
ASK_SECONDS = 2.0
AWAY_SECONDS = 60.0  # APP_CREDENTIALS_AWAY_SECONDS's default


class Change(msgspec.Struct, frozen=True):
    user_id: str
    credentials: Credentials | None


def _away(connection: Client) -> bool:
    return not connection.is_connected


class _BrokerAway(Exception):
    """Asking is impossible now: the last known credentials answer instead, outside the
    memory, so that their age keeps counting from when they were really read."""


class CredentialsAnswerer:
    """In the process of the module owning credentials: answers the gateway's questions,
    and tells it of each change."""

    def __init__(self, nats_url: str, credentials: CurrentCredentials) -> None:
        self._url = nats_url
        self._credentials = credentials
        self._broker = BrokerConnection(nats_url, f"seams-credentials-{os.getpid()}")
        self._sending: set[asyncio.Task[None]] = set()
        credentials.on_change(self._changed)

    async def start(self) -> None:
        connection = await self._broker.open()
        await connection.subscribe(ASK, queue=ANSWERERS, cb=self._answer)

    async def _answer(self, message: Msg) -> None:
        credentials = await self._credentials.fresh(message.data.decode())
        await message.respond(msgspec.json.encode(credentials))

    def _changed(self, user_id: str, credentials: Credentials | None) -> None:
        connection = self._broker.client
        if connection is None:
            return
        change = msgspec.json.encode(Change(user_id, credentials))
        task = asyncio.get_running_loop().create_task(connection.publish(CHANGED, change))
        self._sending.add(task)  # kept until sent: a task only weakly referenced may vanish
        task.add_done_callback(self._sending.discard)

    async def stop(self) -> None:
        await self._broker.close(drain=True)


class CredentialsOverNats:
    """In the gateway process: a CredentialsDirectory that asks the processes owning them."""

    def __init__(
        self,
        nats_url: str,
        *,
        ask_seconds: float = ASK_SECONDS,
        away_seconds: float = AWAY_SECONDS,
    ) -> None:
        self._url = nats_url
        self._ask_seconds = ask_seconds
        self._away_seconds = away_seconds
        self._memory = CurrentCredentials(self._ask)
        self._broker = BrokerConnection(nats_url, f"seams-gateway-credentials-{os.getpid()}")
        self._changes: Subscription | None = None

    async def start(self) -> None:
        connection = await self._broker.open()
        self._changes = await connection.subscribe(CHANGED, cb=self._heard)

    async def current(self, user_id: str) -> Credentials | None:
        try:
            return await self._memory.current(user_id)
        except _BrokerAway:
            return self._as_last_known(user_id)

    async def _heard(self, message: Msg) -> None:
        try:
            change = msgspec.json.decode(message.data, type=Change)
        except msgspec.ValidationError as error:
            log.warning("ignored a malformed credentials change: %r", error)
            return
        self._memory.heard(change.user_id, change.credentials)

    async def _ask(self, user_id: str) -> Credentials | None:
        connection = self._broker.client
        if connection is None:
            raise ServiceUnavailableException("the gateway is not connected to the broker yet")
        if _away(connection):
            raise _BrokerAway
        try:
            answer = await connection.request(ASK, user_id.encode(), timeout=self._ask_seconds)
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError) as error:
            if _away(connection):  # the broker went while we asked
                raise _BrokerAway from error
            raise ServiceUnavailableException(
                "no process of the module owning credentials answered to check the token's "
                "credentials: start one (python -m app --modules <that module>) and retry",
                headers={"Retry-After": "1"},
            ) from error
        return msgspec.json.decode(answer.data, type=Credentials | None)

    def _as_last_known(self, user_id: str) -> Credentials | None:
        known = self._memory.last_known(user_id, within=self._away_seconds)
        if known is None:
            raise ServiceUnavailableException(
                f"the broker NATS {self._url} is away: the token's credentials cannot be "
                f"checked until it is back (the last ones known are kept for "
                f"{self._away_seconds:g} s: APP_CREDENTIALS_AWAY_SECONDS)",
                headers={"Retry-After": "1"},
            )
        return known

    async def stop(self) -> None:
        await self._broker.close()
