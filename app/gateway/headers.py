"""Reading a request's headers straight from the ASGI scope, before Litestar builds a Request."""

from __future__ import annotations

from litestar.types import Scope


def first_header(scope: Scope, name: bytes) -> str | None:
    """The first value of a header (`name` in lowercase, as ASGI gives them), as Litestar's
    Headers.get reads it; None without one."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None
