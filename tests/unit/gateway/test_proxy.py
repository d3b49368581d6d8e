"""The gateway's forwarding, against module instances that refuse, drop or answer."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest
from litestar import Litestar, Request, get
from litestar.testing import AsyncTestClient

from app.gateway.auth import identity_middleware, jwt_auth
from app.gateway.errors import EXCEPTION_HANDLERS
from app.kernel.identity import Caller
from app.kernel.settings import Settings
from app.split.discovery import Instance
from app.split.forwarding import Forwarder, forwarding_route
from app.split.proof import HEADER, GatewayProof

pytestmark = pytest.mark.anyio

SECRET = "a-secret-key-of-enough-length-for-hs256-0123456789"


class Instances:
    """Upstreams: the live instances of each module, in turn."""

    def __init__(self, *urls: str) -> None:
        self.live = [Instance(("orders",), f"i{n}", url, 0) for n, url in enumerate(urls)]
        self.forgotten: list[str] = []
        self._turn = 0

    def pick(self, module: str) -> Instance | None:
        if not self.live:
            return None
        self._turn += 1
        return self.live[self._turn % len(self.live)]

    def forget(self, instance: Instance) -> None:
        self.forgotten.append(instance.url)
        self.live = [i for i in self.live if i.key != instance.key]


def reply(status: int, body: object, headers: dict[str, str] | None = None) -> httpx.Response:
    """An answer as a real server sends it: a stream, read once, as the gateway relays it."""
    data = json.dumps(body).encode()
    return httpx.Response(
        status,
        headers={"content-type": "application/json", **(headers or {})},
        stream=httpx.ByteStream(data),
    )


def app_with(instances: Instances, handler: Callable[[httpx.Request], httpx.Response]) -> Litestar:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    forwarder = Forwarder({"orders": "orders"}, instances, GatewayProof(SECRET), client=client)
    return Litestar([forwarding_route(forwarder)], exception_handlers=EXCEPTION_HANDLERS)


async def test_the_answer_comes_back_whole_with_a_proof_for_the_request_sent() -> None:
    seen: list[httpx.Request] = []

    def module(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return reply(201, {"ok": True}, {"Location": "/api/orders/1"})

    async with AsyncTestClient(app_with(Instances("http://m1"), module)) as client:
        answer = await client.post("/api/orders?x=1", json={"a": 1})

    assert (answer.status_code, answer.json()) == (201, {"ok": True})
    assert answer.headers["location"] == "/api/orders/1"
    [sent] = seen
    assert str(sent.url) == "http://m1/api/orders?x=1"
    proven = GatewayProof(SECRET).verify(sent.headers[HEADER], method="POST", path="/api/orders")
    assert proven.caller is None


async def test_a_refusing_instance_is_forgotten_and_another_one_answers() -> None:
    def module(request: httpx.Request) -> httpx.Response:
        if request.url.host == "m1":
            raise httpx.ConnectError("refused", request=request)
        return reply(200, [])

    instances = Instances("http://m1", "http://m2")
    async with AsyncTestClient(app_with(instances, module)) as client:
        answers = [(await client.get("/api/orders")).status_code for _ in range(3)]

    assert answers == [200, 200, 200]
    assert instances.forgotten == ["http://m1"]


async def test_no_live_instance_is_a_503_that_names_the_module() -> None:
    async with AsyncTestClient(app_with(Instances(), lambda r: reply(200, []))) as client:
        answer = await client.get("/api/orders")

    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "1"
    assert "'orders' has no live instance" in answer.json()["detail"]


def dropping_once() -> Callable[[httpx.Request], httpx.Response]:
    calls = 0

    def module(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise httpx.RemoteProtocolError("Server disconnected", request=request)
        return reply(200, {"calls": calls})

    return module


async def test_a_dropped_connection_is_retried_once_when_repeating_is_harmless() -> None:
    async with AsyncTestClient(app_with(Instances("http://m1"), dropping_once())) as client:
        read = await client.get("/api/orders")
    async with AsyncTestClient(app_with(Instances("http://m1"), dropping_once())) as client:
        keyed = await client.post("/api/orders", json={}, headers={"Idempotency-Key": "k1"})

    assert (read.status_code, read.json()) == (200, {"calls": 2})
    assert (keyed.status_code, keyed.json()) == (200, {"calls": 2})


async def test_a_dropped_post_without_a_key_is_a_502_never_sent_twice() -> None:
    async with AsyncTestClient(app_with(Instances("http://m1"), dropping_once())) as client:
        answer = await client.post("/api/orders", json={})

    assert answer.status_code == 502
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert "Idempotency-Key" in answer.json()["detail"]


async def test_the_gateway_process_checks_a_token_once_and_refuses_a_forged_one() -> None:
    settings = Settings.from_env({}, secret_key=SECRET)
    auth = jwt_auth(settings, SECRET)

    @get("/api/orders", opt={"public": True})
    async def who(request: Request[Caller | None, object, object]) -> str:
        return "anonymous" if request.user is None else request.user.id

    app = Litestar(
        [who],
        middleware=identity_middleware(
            settings,
            auth,
            None,
            lambda scope: "optional" if scope["path"].startswith("/api/") else None,
        ),
        exception_handlers=EXCEPTION_HANDLERS,
    )
    token = auth.create_token(identifier="user-7", token_extras={"role": "user"})
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    async with AsyncTestClient(app) as client:
        bearer = {"Authorization": f"Bearer {token}"}
        answers = [(await client.get("/api/orders", headers=bearer)).text for _ in range(3)]
        anonymous = await client.get("/api/orders")
        refused = await client.get("/api/orders", headers={"Authorization": f"Bearer {forged}"})

    assert answers == ["user-7"] * 3
    assert anonymous.text == "anonymous"
    assert refused.status_code == 401
    assert len(auth.verified_tokens) == 1  # verified once, remembered; the forged one not
