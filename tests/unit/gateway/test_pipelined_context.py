"""A request never starts in another request's context, even when it was pipelined behind it
on one kept-alive connection (uvicorn starts a queued request from inside the task of the one
before it)."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pytest
import uvicorn

from app.split.cluster import free_port
from app.transport import head_deadline_protocol
from tests.support.waits import until

pytestmark = pytest.mark.anyio

current_request: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "current_request", default=None
)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    inherited = current_request.get()
    current_request.set(scope["path"])
    body = f"{scope['path']} started in {inherited}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body, "more_body": True})
    await asyncio.sleep(0.05)  # a streamed answer: the last, empty message comes later
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def test_a_pipelined_request_does_not_start_in_the_context_of_the_one_before() -> None:
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, http=head_deadline_protocol(5), log_level="warning"
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        await until(lambda: server.started, "the server to listen")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        two_requests = (
            b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n" + b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        writer.write(two_requests)
        await writer.drain()
        answers = b""
        while answers.count(b"started in") < 2:
            answers += await asyncio.wait_for(reader.read(4096), 5)
        writer.close()
    finally:
        server.should_exit = True
        await serving
    assert b"/first started in None" in answers
    assert b"/second started in None" in answers, answers.decode()
