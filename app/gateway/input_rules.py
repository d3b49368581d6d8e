"""Rules every request's input meets before a handler sees it.

- JSON bodies are decoded strictly: `"2"` is not a number and `2.0` is not an integer
  (Litestar's own parsing converts loosely, which would let wrong types through).
- An empty or undecodable body is a 400 that says so.
- Text never contains NUL (U+0000): PostgreSQL cannot store it, so no store gets it.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from litestar import Request

from app.kernel.errors import InvalidInput

_WHERE = re.compile(r" - at `\$\.?(?P<field>[^`]*)`$")
NUL_MESSAGE = "text may not contain the NUL character (U+0000)"


async def check_input(request: Request[Any, Any, Any]) -> None:
    """A before_request hook: raises InvalidInput (400) for input no handler should see."""
    if "\x00" in request.scope["path"] or b"%00" in request.scope.get("query_string", b""):
        parameters = [*request.path_params.items(), *request.query_params.multi_items()]
        named = next((name for name, value in parameters if "\x00" in str(value)), "url")
        raise InvalidInput(named, NUL_MESSAGE)
    field = request.route_handler.parsed_data_field
    if field is None:
        return
    body = await request.body()
    if not body.strip():
        raise InvalidInput("body", "the request body is empty: send a JSON object")
    try:
        msgspec.json.decode(body, type=field.annotation, strict=True)
    except msgspec.ValidationError as error:
        message = str(error)
        located = _WHERE.search(message)
        raise InvalidInput(
            located["field"] if located and located["field"] else "body",
            _WHERE.sub("", message),
        ) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as error:
        raise InvalidInput("body", f"the request body is not valid JSON: {error}") from None
    if b"\\u0000" in body or b"\x00" in body:
        path = _nul_in(msgspec.json.decode(body), "")
        if path is not None:
            raise InvalidInput(path or "body", NUL_MESSAGE)


def _nul_in(value: object, path: str) -> str | None:
    """Where a NUL hides in decoded JSON (`items[0].sku`), or None."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            inner = f"{path}.{key}" if path else str(key)
            found = inner if "\x00" in str(key) else _nul_in(item, inner)
            if found is not None:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _nul_in(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None
