"""X-Request-ID: accepted when well-formed (decision 12), generated otherwise, returned on
every response, and made the correlation id of the events a request causes."""

from __future__ import annotations

import logging
import re

from litestar.datastructures import MutableScopeHeaders
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from app.bus.context import current_module, current_request_id
from app.kernel.ids import new_id

HEADER = "x-request-id"
_VALID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_STATE_KEY = "seams.request_id"


def request_id_of(scope: Scope) -> str:
    """The request's id, decided once per request and kept in its scope."""
    state = scope.setdefault("state", {})
    known = state.get(_STATE_KEY)
    if known is not None:
        return str(known)
    offered = next(
        (
            value.decode("latin-1")
            for name, value in scope.get("headers", [])
            if name == b"x-request-id"
        ),
        None,
    )
    chosen = offered if offered is not None and _VALID.fullmatch(offered) else new_id()
    state[_STATE_KEY] = chosen
    return chosen


access_log = logging.getLogger("app.access")


class RequestIdMiddleware(ASGIMiddleware):
    """Sets the request id for everything the request runs, and writes the access log line
    with it (uvicorn's own access log, which cannot know the id, is off)."""

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        token = current_request_id.set(request_id_of(scope))
        module = current_module.set(scope["app"].state.runtime.owner_of(scope["path"]))
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await next_app(scope, receive, sending)
        finally:
            if access_log.isEnabledFor(logging.INFO):
                access_log.info("%s %s %d", scope.get("method"), scope["path"], status)
            current_module.reset(module)
            current_request_id.reset(token)


async def add_request_id_header(message: Message, scope: Scope) -> None:
    """before_send hook: runs for every response, errors and unknown routes included."""
    if message["type"] == "http.response.start":
        MutableScopeHeaders.from_message(message)["X-Request-ID"] = request_id_of(scope)
