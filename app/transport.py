"""The socket side of `python -m app`, for either ASGI server: whose X-Forwarded-For is
believed, and how long a request head may take.

X-Forwarded-For names the client (for the rate limit, the login limits, the logs, /metrics)
only when a proxy APP_TRUSTED_PROXIES names sent it: uvicorn's own default believes any
loopback client, so anyone on the host (or any local proxy's client) could pick an address.

uvicorn closes a connection left idle after a response (`timeout_keep_alive`), but gives a
request head all the time in the world: a client that opens a connection and sends nothing,
or sends a header byte every few seconds and never the blank line (slowloris), holds its
connection forever, and a few hundred such clients hold them all. Here a head must be whole
within APP_HEADER_TIMEOUT_SECONDS of the connection opening or of its first byte; a slow one
is answered 408 and the connection closed. (A request's body is the app's to read; the body
size limit bounds it.) Granian has this timer built in (hyper's header read timeout).
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import TYPE_CHECKING, Any, cast

import msgspec
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.kernel.networks import address_set
from app.kernel.settings import Settings

if TYPE_CHECKING:
    from litestar.types import ASGIApp


def trusted_proxy_headers(app: ASGIApp, settings: Settings) -> ASGIApp:
    """The app, reading X-Forwarded-For from the proxies APP_TRUSTED_PROXIES names (uvicorn's
    middleware, the code uvicorn runs itself; granian reads no such header); as it is when
    none is named."""
    proxies = address_set(settings.trusted_proxies, "trusted_proxies")
    if not proxies:
        return app
    trusted = [str(network) for network in proxies.networks]
    return cast("ASGIApp", ProxyHeadersMiddleware(cast(Any, app), trusted))


class HeadDeadlineProtocol(HttpToolsProtocol):
    head_seconds: float = 10.0  # set by `head_deadline_protocol`

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # What a request starts from: the connection's context, never another request's.
        self._connection_context = contextvars.copy_context()
        self._head_begun = False
        self._head_deadline: asyncio.TimerHandle | None = None
        self._arm_head_deadline()  # a connection that never sends a byte is closed too

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # A head that came whole in this chunk (nearly every one) needs no timer; one still
        # incomplete gets its deadline now, from its first byte. A timer per request cost the
        # saga ~10% of its throughput at 8 clients (bench/saga.py).
        if self._head_begun and self._head_deadline is None:
            self._arm_head_deadline()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_begun = True

    def on_headers_complete(self) -> None:
        self._disarm_head_deadline()
        self._head_begun = False
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        # uvicorn calls this from inside the finished request's task and starts a pipelined
        # request there, so that request would inherit the first one's context: its trace span
        # (a second request became a child of the first in split-mode traces), its request id.
        # A request queues behind another whenever its head arrives before the last, empty
        # body message of a streamed answer (the split gateway forwards streamed responses).
        self._connection_context.copy().run(super().on_response_complete)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        self._head_deadline = self.loop.call_later(self.head_seconds, self._head_too_slow)

    def _disarm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined head behind a request still being answered: its time starts anew,
            # rather than cutting that answer short.
            self._arm_head_deadline()
            return
        if self._head_begun:  # a begun request hears why; silence hears nothing
            self.transport.write(self._request_timeout())
        self.transport.close()

    def _request_timeout(self) -> bytes:
        """408 in the app's error shape (RFC 9457), written straight to the socket."""
        body = msgspec.json.encode(
            {
                "type": "about:blank",
                "title": "Request Timeout",
                "status": 408,
                "detail": f"the request head was not complete within {self.head_seconds:g} s",
            }
        )
        head = [b"HTTP/1.1 408 Request Timeout\r\n"]
        head += [
            name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers
        ]
        head += [
            b"content-type: application/problem+json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        return b"".join(head) + body


def head_deadline_protocol(seconds: float) -> type[HeadDeadlineProtocol]:
    """The protocol class to hand uvicorn (`http=`), with its deadline."""
    attributes: dict[str, Any] = {"head_seconds": seconds}
    return type("HeadDeadlineProtocol", (HeadDeadlineProtocol,), attributes)
