"""The gateway's forwarding, against module instances that refuse, drop or answer."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import pytest
from aiohttp import web
from litestar import Litestar, Request, get
from litestar.testing import AsyncTestClient

from app.gateway.auth import identity_middleware, jwt_auth
from app.gateway.errors import EXCEPTION_HANDLERS
from app.kernel.identity import Caller
from app.kernel.settings import Settings
from app.split.cluster import free_port
from app.split.discovery import Instance
from app.split.forwarding import WHOLE_BODY_BYTES, Forwarder, forwarding_route
from app.split.proof import HEADER, GatewayProof

pytestmark = pytest.mark.anyio

SECRET = "a-secret-key-of-enough-length-for-hs256-0123456789"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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


def reply(status: int, body: object, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        headers={"content-type": "application/json", **(headers or {})},
    )


@contextmanager
def module_instance(handler: Handler) -> Iterator[str]:
    """A module instance on a loopback port, answering every request with `handler`, on a
    loop of its own (the test client runs the gateway on another one, in its own thread)."""
    loop = asyncio.new_event_loop()
    port = free_port()

    async def start() -> web.ServerRunner:
        runner = web.ServerRunner(web.Server(handler))  # made on its loop
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner = asyncio.run_coroutine_threadsafe(start(), loop).result(5)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def app_with(instances: Instances) -> Litestar:
    forwarder = Forwarder({"orders": "orders"}, instances, GatewayProof(SECRET), read_seconds=2)
    return Litestar(
        [forwarding_route(forwarder)],
        exception_handlers=EXCEPTION_HANDLERS,
        on_shutdown=[forwarder.close],
    )


def refusing_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


async def test_the_answer_comes_back_whole_with_a_proof_for_the_request_sent() -> None:
    seen: list[tuple[str, str, str, bytes]] = []

    async def module(request: web.Request) -> web.Response:
        seen.append(
            (request.method, str(request.rel_url), request.headers[HEADER], await request.read())
        )
        return reply(201, {"ok": True}, {"Location": "/api/orders/1"})

    with module_instance(module) as url:
        async with AsyncTestClient(app_with(Instances(url))) as client:
            answer = await client.post("/api/orders/a%2Fb?x=1&y=%20", json={"a": 1})

    assert (answer.status_code, answer.json()) == (201, {"ok": True}), answer.text
    assert answer.headers["location"] == "/api/orders/1"
    [(method, target, proof, body)] = seen
    assert (method, target, json.loads(body)) == ("POST", "/api/orders/a%2Fb?x=1&y=%20", {"a": 1})
    proven = GatewayProof(SECRET).verify(proof, method="POST", path="/api/orders/a/b")
    assert proven.caller is None


@pytest.mark.parametrize("size", [0, 10, WHOLE_BODY_BYTES, WHOLE_BODY_BYTES + 1, 3 * 2**20])
@pytest.mark.parametrize("length_known", [True, False])
async def test_an_answer_of_any_size_arrives_whole_with_its_status_and_headers(
    size: int, length_known: bool
) -> None:
    # Short answers of known length are read whole, the rest streamed (forwarding.py).
    body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)

    async def module(request: web.Request) -> web.StreamResponse:
        headers = {"content-type": "application/octet-stream", "x-module": "orders"}
        if length_known:
            return web.Response(status=203, body=body, headers=headers)
        answer = web.StreamResponse(status=203, headers=headers)
        answer.enable_chunked_encoding()
        await answer.prepare(request)
        for start in range(0, size, 65_536):
            await answer.write(body[start : start + 65_536])
        await answer.write_eof()
        return answer

    with module_instance(module) as url:
        async with AsyncTestClient(app_with(Instances(url))) as client:
            answer = await client.get("/api/orders/export")

    assert (answer.status_code, len(answer.content)) == (203, size)
    assert answer.content == body
    assert answer.headers["x-module"] == "orders"
    assert answer.headers["content-type"] == "application/octet-stream"
    if length_known:
        assert answer.headers["content-length"] == str(size)


async def test_an_answer_without_content_is_forwarded_without_content() -> None:
    async def module(request: web.Request) -> web.Response:
        return web.Response(status=204, headers={"x-module": "orders"})

    with module_instance(module) as url:
        async with AsyncTestClient(app_with(Instances(url))) as client:
            answer = await client.delete("/api/orders/1")

    assert (answer.status_code, answer.content, answer.headers["x-module"]) == (204, b"", "orders")


async def test_a_refusing_instance_is_forgotten_and_another_one_answers() -> None:
    async def module(request: web.Request) -> web.Response:
        return reply(200, [])

    gone = refusing_url()
    with module_instance(module) as url:
        instances = Instances(gone, url)
        async with AsyncTestClient(app_with(instances)) as client:
            answers = [(await client.get("/api/orders")).status_code for _ in range(3)]

    assert answers == [200, 200, 200]
    assert instances.forgotten == [gone]


async def test_no_live_instance_is_a_503_that_names_the_module() -> None:
    async with AsyncTestClient(app_with(Instances())) as client:
        answer = await client.get("/api/orders")

    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "1"
    assert "'orders' has no live instance" in answer.json()["detail"]


async def test_an_instance_that_does_not_answer_in_time_is_a_503() -> None:
    async def module(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return reply(200, [])

    with module_instance(module) as url:
        async with AsyncTestClient(app_with(Instances(url))) as client:
            answer = await client.get("/api/orders")

    assert answer.status_code == 503
    assert "'orders' did not answer in time" in answer.json()["detail"]


def dropping_once() -> tuple[Handler, list[int]]:
    """Drops the connection of its first request without an answer; answers the others."""
    calls: list[int] = []

    async def module(request: web.Request) -> web.Response:
        calls.append(1)
        if len(calls) == 1:
            assert request.transport is not None
            request.transport.abort()
            raise asyncio.CancelledError
        return reply(200, {"calls": len(calls)})

    return module, calls


async def test_a_dropped_connection_is_retried_once_when_repeating_is_harmless() -> None:
    read_module, _ = dropping_once()
    with module_instance(read_module) as url:
        async with AsyncTestClient(app_with(Instances(url))) as client:
            read = await client.get("/api/orders")
    keyed_module, _ = dropping_once()
    with module_instance(keyed_module) as url:
        async with AsyncTestClient(app_with(Instances(url))) as client:
            keyed = await client.post("/api/orders", json={}, headers={"Idempotency-Key": "k1"})

    assert (read.status_code, read.json()) == (200, {"calls": 2})
    assert (keyed.status_code, keyed.json()) == (200, {"calls": 2})


async def test_a_dropped_post_without_a_key_is_a_502_never_sent_twice() -> None:
    module, calls = dropping_once()
    with module_instance(module) as url:
        async with AsyncTestClient(app_with(Instances(url))) as client:
            answer = await client.post("/api/orders", json={})

    assert answer.status_code == 502
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert "Idempotency-Key" in answer.json()["detail"]
    assert len(calls) == 1


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
