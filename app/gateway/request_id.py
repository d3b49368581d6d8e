"""X-Request-ID: accepted when well-formed (docs/decisions/0012-limits.md), generated
otherwise, returned on every response, and made the correlation id of the events a request
causes."""

from __future__ import annotations

import re

from litestar.types import Message, Scope

from app.gateway.headers import first_header
from app.kernel.ids import new_id

HEADER = "x-request-id"
_HEADER = HEADER.encode("latin-1")
_VALID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_STATE_KEY = "seams.request_id"


def request_id_of(scope: Scope) -> str:
    """The request's id, decided once per request and kept in its scope."""
    state = scope.setdefault("state", {})
    known = state.get(_STATE_KEY)
    if known is not None:
        return str(known)
    offered = first_header(scope, _HEADER)
    chosen = offered if offered is not None and _VALID.fullmatch(offered) else new_id()
    state[_STATE_KEY] = chosen
    return chosen


async def add_request_id_header(message: Message, scope: Scope) -> None:
    """before_send hook: runs for every response, errors and unknown routes included."""
    if message["type"] == "http.response.start":
        value = request_id_of(scope).encode("latin-1")
        headers = [
            (name, raw) for name, raw in message.get("headers", ()) if name.lower() != _HEADER
        ]
        headers.append((_HEADER, value))
        message["headers"] = headers
