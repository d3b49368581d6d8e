"""The gateway alone (split mode): authenticate, then forward /api/<module>/… to a live
instance of the module that owns the prefix, streaming both bodies.

Which module owns which prefix comes from the modules' declarations; where their instances
are comes from discovery (app/split/discovery.py), never from a list of URLs. A module with
no live instance is a 503 naming it, at once: the gateway never waits for one to appear.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

import aiohttp
from litestar import Request, Response, route
from litestar.background_tasks import BackgroundTask
from litestar.enums import HttpMethod
from litestar.exceptions import MethodNotAllowedException
from litestar.response import Stream
from opentelemetry import propagate
from yarl import URL

from app.bus import Watch
from app.gateway.export import Exports
from app.gateway.request_id import request_id_of
from app.gateway.watch import is_journey_path, journey_of
from app.kernel.errors import DomainError, NotFound, Unavailable
from app.kernel.identity import Caller
from app.modules.spec import ApiPrefixes
from app.split.discovery import Instance
from app.split.proof import HEADER as PROOF_HEADER
from app.split.proof import GatewayProof

log = logging.getLogger("app.split.forwarding")

# Hop-by-hop headers (RFC 9110 7.6.1) and what the gateway sets itself: never forwarded.
_REQUEST_DROP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "authorization",  # the module gets the proof instead of the user's token
        PROOF_HEADER,
        "traceparent",
        "tracestate",
        "x-request-id",
    }
)
_RESPONSE_DROP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-type",  # passed as the media type
        "date",
        "server",
        "x-request-id",  # the gateway's own hook sets it (the same id)
    }
)
# An answer up to this size, with its length known, is read whole and sent on in one piece;
# a longer one, or one of unknown length (an event stream), is streamed as it comes
# (docs/decisions/0037-request-path-cost.md).
WHOLE_BODY_BYTES = 256 * 1024
METHODS = [
    HttpMethod.GET,
    HttpMethod.POST,
    HttpMethod.PUT,
    HttpMethod.PATCH,
    HttpMethod.DELETE,
]


class Upstreams(Protocol):
    def pick(self, module: str) -> Instance | None: ...

    def forget(self, instance: Instance) -> None: ...


class Forwarder:
    """Where a prefix goes and how a request gets there."""

    def __init__(
        self,
        owners: Mapping[str, str],
        upstreams: Upstreams,
        proof: GatewayProof,
        *,
        connect_seconds: float = 2.0,
        read_seconds: float = 60.0,
    ) -> None:
        self.prefixes = ApiPrefixes(owners)
        self.upstreams = upstreams
        self.proof = proof
        self._timeout = aiohttp.ClientTimeout(connect=connect_seconds, sock_read=read_seconds)
        self._session: aiohttp.ClientSession | None = None  # made in the loop, on first use

    @property
    def session(self) -> aiohttp.ClientSession:
        """aiohttp's client, not httpx's: a tenth of the CPU per forwarded request
        (docs/decisions/0036-forwarding.md)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                # Idle connections are let go before the module's server closes them (uvicorn:
                # after 5 s), so a request never goes out on a connection being closed.
                connector=aiohttp.TCPConnector(limit=200, keepalive_timeout=2.0),
                auto_decompress=False,  # the body goes on as the module sent it
                # Only the caller's own headers: none of the client's defaults.
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def forward(self, request: Request[Any, Any, Any]) -> Response[Any]:
        path = request.scope["path"]
        module = self.prefixes.module_of(path)
        if module is None:
            raise NotFound(f"no module serves {path}")
        body = await request.body()  # bounded by request_max_body_size (413 beyond it)
        headers = self._headers_for(request, path)
        tried: set[str] = set()
        dropped = 0
        while True:
            instance = self.upstreams.pick(module)
            if instance is None or instance.key in tried:
                raise Unavailable(
                    f"module {module!r} has no live instance: start one "
                    f"(python -m app --modules {module}) and retry",
                    headers={"Retry-After": "1"},
                )
            tried.add(instance.key)
            try:
                answer = await self.session.request(
                    request.method,
                    _upstream_url(instance, request),
                    headers=headers,
                    data=body,
                    allow_redirects=False,
                )
            except aiohttp.ClientConnectorError as error:
                # Nothing reached it: the instance is gone. Try another one, if any.
                log.warning("instance %s of %s refused: %r", instance.key, module, error)
                self.upstreams.forget(instance)
                continue
            except TimeoutError as error:
                raise Unavailable(
                    f"module {module!r} did not answer in time ({error.__class__.__name__})",
                    headers={"Retry-After": "1"},
                ) from None
            except aiohttp.ClientError as error:
                # The connection broke after the request went out: it may have taken effect.
                # Send it again only when that is harmless, once.
                log.warning("instance %s of %s dropped %s: %r", instance.key, module, path, error)
                if dropped == 0 and _repeatable(request):
                    dropped += 1
                    tried.discard(instance.key)
                    continue
                raise BadGateway(
                    f"module {module!r} dropped the connection before answering; the request "
                    "may have taken effect: send it again with the same Idempotency-Key"
                ) from None
            return await _answer_of(answer)

    def _headers_for(self, request: Request[Any, Any, Any], path: str) -> dict[str, str]:
        caller = request.scope.get("user")
        headers = {k: v for k, v in request.headers.items() if k not in _REQUEST_DROP}
        headers[PROOF_HEADER] = self.proof.issue(
            caller=caller if isinstance(caller, Caller) else None,
            method=request.method,
            path=path,
            client_host=request.client.host if request.client else None,
        )
        headers["x-request-id"] = request_id_of(request.scope)
        propagate.inject(headers)  # the module's spans join this request's trace
        return headers


class BadGateway(DomainError):
    status = 502
    title = "Bad gateway"


_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


def _repeatable(request: Request[Any, Any, Any]) -> bool:
    """Idempotent by its method, or made so by an Idempotency-Key the module honours."""
    return request.method in _SAFE_METHODS or "idempotency-key" in request.headers


def _upstream_url(instance: Instance, request: Request[Any, Any, Any]) -> URL:
    """The instance's URL with the request's path and query exactly as the client sent them
    (encoded=True: not quoted again)."""
    raw_path = request.scope.get("raw_path") or request.scope["path"].encode()
    # The ASGI spec leaves the query out of raw_path; some servers (the test client) do not.
    target = raw_path.decode("latin-1").partition("?")[0]
    query = request.scope.get("query_string", b"").decode("latin-1")
    return URL(instance.url + target + (f"?{query}" if query else ""), encoded=True)


async def _answer_of(answer: aiohttp.ClientResponse) -> Response[Any]:
    """The module's answer, as the gateway's: whole when it is short, else streamed."""
    headers = {k: v for k, v in answer.headers.items() if k.lower() not in _RESPONSE_DROP}
    media_type = answer.headers.get("content-type")
    length = answer.content_length
    if length is not None and length <= WHOLE_BODY_BYTES:
        try:
            body = await answer.read()
        finally:
            answer.release()
        return Response(body, status_code=answer.status, headers=headers, media_type=media_type)
    return Stream(
        _body_of(answer),
        status_code=answer.status,
        headers=headers,
        media_type=media_type,
        background=BackgroundTask(_release, answer),
    )


async def _body_of(answer: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    async for chunk in answer.content.iter_any():
        yield chunk


async def _release(answer: aiohttp.ClientResponse) -> None:
    """The connection back to the pool (or closed, when the body was not read to its end)."""
    answer.release()


def forwarding_route(
    forwarder: Forwarder, *, journeys: Watch | None = None, exports: Exports | None = None
) -> Any:
    """The route of every /api/<prefix>/…: forwarded to its module, except a journey
    (/api/<prefix>/{id}/journey), which `journeys`, the gateway's watch, answers here, and
    a user's export (/api/<prefix>/{id}/export), which `exports` composes here from the
    modules' APIs (app/gateway/export.py). (A
    route of its own for each journey would make Litestar's router take /api/<prefix> for a
    static path and no longer hand /api/<prefix> itself to this one.)"""

    @route(
        ["/api/{prefix:str}", "/api/{prefix:str}/{rest:path}"],
        http_method=METHODS,
        opt={"public": True},  # identity_middleware authenticates; modules authorize
        include_in_schema=False,
        name="forward",
    )
    async def forward(request: Request[Any, Any, Any]) -> Response[Any]:
        path = request.scope["path"]
        journey = journeys is not None and is_journey_path(path)
        export = exports is not None and exports.serves(path)
        if (journey or export) and request.method != "GET":
            # What the monolith's router answers for these GET-only routes.
            raise MethodNotAllowedException(headers={"Allow": "GET, OPTIONS"})
        if journey and journeys is not None:
            journey_out = journey_of(journeys, path.split("/")[3], request.user)
            return Response(journey_out, status_code=200)
        if export and exports is not None:
            exported = await exports.of(request, path.split("/")[3])
            return Response(exported, status_code=200)
        return await forwarder.forward(request)

    return forward
