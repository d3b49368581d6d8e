"""Cursor pages, the one shape every list endpoint answers with (docs/decisions/0004-pages.md)."""

from __future__ import annotations

from typing import Annotated, Generic, Protocol, TypeVar

import msgspec
from litestar.params import QueryParameter

DEFAULT_LIMIT = 50
MAX_LIMIT = 200

Limit = Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT, description="Items per page (1-200).")]
Cursor = Annotated[
    str | None,
    QueryParameter(
        min_length=1,
        max_length=64,
        pattern=r"^[0-9a-f-]+(?!\n)$",  # Python's `$` alone also matches before a final \n
        description="Opaque cursor: the previous page's next_cursor.",
    ),
]


class HasId(Protocol):
    @property
    def id(self) -> str: ...


T = TypeVar("T", bound=HasId)


class Page(msgspec.Struct, Generic[T]):
    items: list[T]
    next_cursor: str | None


def page_of(fetched: list[T], limit: int) -> Page[T]:
    """A page from up to limit + 1 fetched items: the extra one only says 'there is more'."""
    if len(fetched) <= limit:
        return Page(items=fetched, next_cursor=None)
    kept = fetched[:limit]
    return Page(items=kept, next_cursor=kept[-1].id)
