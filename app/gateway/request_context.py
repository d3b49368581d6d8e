"""What every routed request runs inside: its id and the module serving it (the context of
every log line and event it causes), one access log line, and its HTTP metrics.

One plain ASGI layer. It was two middlewares (request id; Litestar's Prometheus, which
built a `Request` and parsed its URL to label each request), each behind Litestar's
per-request wrapper: with the no-op module span they cost ~40 µs of CPU per read, as much
as the bare app's whole read takes in one process (bench/README.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from litestar.exceptions import HTTPException
from litestar.middleware import DefineMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from app.bus import Watch
from app.bus.context import current_module, current_request_id
from app.gateway.export import served_by_gateway
from app.gateway.metrics import HttpMetrics
from app.gateway.request_id import request_id_of
from app.gateway.watch import watched
from app.kernel.identity import Caller
from app.modules.spec import GATEWAY, api_prefix

access_log = logging.getLogger("app.access")
UNCOUNTED = "/metrics"  # a scrape does not count itself


class ModuleOwners:
    """Which module serves a path (the gateway's own routes: "gateway"), looked up once per
    /api/<prefix>. Bounded: a route like the split gateway's /api/{prefix}/… lets a client
    name any prefix."""

    def __init__(self, owner_of: Callable[[str], str], size: int = 64) -> None:
        self._owner_of = owner_of
        self._size = size
        self._by_prefix: dict[str, str] = {}

    def of(self, path: str) -> str:
        if served_by_gateway(path):
            return GATEWAY
        prefix = api_prefix(path) or ""
        owner = self._by_prefix.get(prefix)
        if owner is None:
            owner = self._owner_of(path)
            if len(self._by_prefix) < self._size:
                self._by_prefix[prefix] = owner
        return owner


class RequestContextMiddleware:
    def __init__(
        self, app: ASGIApp, owners: ModuleOwners, metrics: HttpMetrics, watch: Watch | None
    ) -> None:
        self.app = app
        self.owners = owners
        self.metrics = metrics
        self.watch = watch

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        method = str(scope.get("method") or scope["type"])  # Litestar labels a websocket so
        module = self.owners.of(path)
        request_id = request_id_of(scope)
        request_token = current_request_id.set(request_id)
        module_token = current_module.set(module)
        status = 500  # unless a response starts

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        counted = path != UNCOUNTED
        route = scope.get("path_template", path)
        running = self.metrics.running(method, route, module) if counted else None
        if running is not None:
            running.inc()
        started = time.perf_counter()
        try:
            await self.app(scope, receive, sending)
        except HTTPException as error:  # a middleware's refusal (401, 429): answered outside
            status = error.status_code
            raise
        finally:
            elapsed = time.perf_counter() - started
            if running is not None:
                running.dec()
                self.metrics.finished(method, route, module, status, elapsed)
            if self.watch is not None and watched(path):
                caller = scope.get("user")
                self.watch.request(
                    method=method,
                    path=path,
                    status=status,
                    ms=elapsed * 1000.0,
                    request_id=request_id,
                    user_id=caller.id if isinstance(caller, Caller) else None,
                )
            if access_log.isEnabledFor(logging.INFO):
                access_log.info("%s %s %d", method, path, status)
            current_module.reset(module_token)
            current_request_id.reset(request_token)


def request_context(owner_of: Callable[[str], str], watch: Watch | None = None) -> DefineMiddleware:
    """The middleware, with one owner cache and one set of metric children for every route
    (Litestar builds a middleware instance per route); with a watch, each API request is
    told to it (its caller, status and time), for the page that shows the bus."""
    return DefineMiddleware(
        RequestContextMiddleware, owners=ModuleOwners(owner_of), metrics=HttpMetrics(), watch=watch
    )
