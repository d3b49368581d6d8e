"""Rules every request's input meets before a handler sees it.

- A body is declared JSON (`application/json` or `application/<something>+json`): anything
  else is a 415, so a form or a text/plain body a browser sends cross-site is never parsed.
- JSON bodies are decoded strictly: `"2"` is not a number and `2.0` is not an integer
  (Litestar's own parsing converts loosely, which would let wrong types through).
- A key given twice in one object is a 400: a decoder would silently keep the last one.
- An empty or undecodable body is a 400 that says so; every missing field is named.
- Text never contains NUL (U+0000): PostgreSQL cannot store it, so no store gets it.

A field's `msgspec.Meta(extra={"error": ...})` says, in words, what a value that does not
match its pattern is not ("not an email address"), instead of printing the pattern.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

import msgspec
from litestar import Request
from litestar.exceptions import HTTPException

from app.kernel.errors import InvalidInput

_WHERE = re.compile(r" - at `\$\.?(?P<field>[^`]*)`$")
_MISSING = re.compile(r"^Object missing required field `")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<key>[^`]*)`")
_PATTERN = re.compile(r"^Expected `str` matching regex ")
_PATH_STEP = re.compile(r"\.?(?P<name>[^.\[]+)|\[(?P<index>\d+)\]")
# The end of every key token: its closing quote, then the colon. Escaped quotes inside
# strings can match too, so this counts at least as many keys as the body holds.
_KEY_END = re.compile(rb'"\s*:')
_generic = msgspec.json.Decoder()

NUL_MESSAGE = "text may not contain the NUL character (U+0000)"
JSON_MEDIA_TYPE = "application/json"


async def check_input(request: Request[Any, Any, Any]) -> None:
    """A before_request hook: raises InvalidInput (400) for input no handler should see, and
    a 415 for a body that is not declared JSON."""
    if "\x00" in request.scope["path"] or b"%00" in request.scope.get("query_string", b""):
        parameters = [*request.path_params.items(), *request.query_params.multi_items()]
        named = next((name for name, value in parameters if "\x00" in str(value)), "url")
        raise InvalidInput(named, NUL_MESSAGE)
    field = request.route_handler.parsed_data_field
    if field is None:
        return
    _require_json_media_type(request)
    body = await request.body()
    if not body.strip():
        raise InvalidInput("body", "the request body is empty: send a JSON object")
    try:
        msgspec.json.decode(body, type=field.annotation, strict=True)
    except msgspec.ValidationError as error:
        raise _explained(str(error), body, field.annotation) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as error:
        raise InvalidInput("body", f"the request body is not valid JSON: {error}") from None
    decoded = _generic.decode(body)
    if len(_KEY_END.findall(body)) > _keys_in(decoded):
        repeated = _repeated_key(body)
        if repeated is not None:
            raise InvalidInput(repeated, "this key is given more than once: give it once")
    if b"\\u0000" in body or b"\x00" in body:
        path = _nul_in(decoded, "")
        if path is not None:
            raise InvalidInput(path or "body", NUL_MESSAGE)


def _require_json_media_type(request: Request[Any, Any, Any]) -> None:
    media_type = request.content_type[0].lower()
    if media_type == JSON_MEDIA_TYPE or (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        return
    got = f"got {media_type}" if media_type else "no Content-Type was sent"
    raise HTTPException(
        status_code=415,
        detail=f"send the body as JSON with Content-Type: {JSON_MEDIA_TYPE} ({got})",
        headers={f"Accept-{request.method.title()}": JSON_MEDIA_TYPE},
    )


def _explained(message: str, body: bytes, annotation: Any) -> InvalidInput:
    """msgspec's first complaint, said for a person: every missing field named, an unknown
    field by its path, a pattern by what the value is not."""
    located = _WHERE.search(message)
    where = located["field"] if located else ""
    what = _WHERE.sub("", message)
    schema = msgspec.inspect.type_info(annotation)
    if _MISSING.match(what):
        missing = list(_missing_fields(_generic.decode(body), schema, ""))
        if missing:
            first, *others = missing
            return InvalidInput(
                first,
                "this field is required",
                *((name, "this field is required") for name in others),
            )
    if unknown := _UNKNOWN.match(what):
        return InvalidInput(_joined(where, unknown["key"]), "unknown field: leave it out")
    if _PATTERN.match(what):
        return InvalidInput(where or "body", _pattern_error(schema, where))
    return InvalidInput(where or "body", what)


def _joined(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _unwrapped(schema: msgspec.inspect.Type) -> msgspec.inspect.Type:
    while isinstance(schema, msgspec.inspect.Metadata):
        schema = schema.type
    return schema


def _missing_fields(value: object, schema: msgspec.inspect.Type, path: str) -> Iterator[str]:
    """The paths of the required fields absent from `value` (`items[1].sku`), in order."""
    schema = _unwrapped(schema)
    if isinstance(schema, msgspec.inspect.UnionType):
        for member in schema.types:
            yield from _missing_fields(value, member, path)
    elif isinstance(schema, msgspec.inspect.StructType) and isinstance(value, dict):
        for field in schema.fields:
            name = _joined(path, field.encode_name)
            if field.encode_name in value:
                yield from _missing_fields(value[field.encode_name], field.type, name)
            elif field.required:
                yield name
    elif isinstance(schema, msgspec.inspect.ListType) and isinstance(value, list):
        for index, item in enumerate(value):
            yield from _missing_fields(item, schema.item_type, f"{path}[{index}]")


def _pattern_error(schema: msgspec.inspect.Type, path: str) -> str:
    """What the field's metadata says a non-matching value is not, else a plain sentence."""
    found: msgspec.inspect.Type | None = schema
    for step in _PATH_STEP.finditer(path):
        found = _step(found, step["name"], step["index"])
    while isinstance(found, msgspec.inspect.Metadata):
        if found.extra and isinstance(found.extra.get("error"), str):
            return str(found.extra["error"])
        found = found.type
    return "does not have the form this field needs (see its pattern in /schema)"


def _step(
    schema: msgspec.inspect.Type | None, name: str | None, index: str | None
) -> msgspec.inspect.Type | None:
    if isinstance(schema, msgspec.inspect.Metadata):
        return _step(schema.type, name, index)
    if isinstance(schema, msgspec.inspect.UnionType):
        inner = (_step(member, name, index) for member in schema.types)
        return next((found for found in inner if found is not None), None)
    if isinstance(schema, msgspec.inspect.StructType) and name is not None:
        return next((f.type for f in schema.fields if f.encode_name == name), None)
    if isinstance(schema, msgspec.inspect.ListType) and index is not None:
        return schema.item_type
    return None


def _keys_in(value: object) -> int:
    """How many keys the decoded objects hold, all levels together."""
    inner: Iterable[object]
    if isinstance(value, dict):
        inner, count = value.values(), len(value)
    elif isinstance(value, list):
        inner, count = value, 0
    else:
        return 0
    for item in inner:
        if isinstance(item, dict | list):  # a scalar holds no keys: skip the call
            count += _keys_in(item)
    return count


class _Repeated(dict[str, Any]):
    """An object in which `key` was given more than once."""

    key = ""


def _keep_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    kept = dict(pairs)
    if len(kept) == len(pairs):
        return kept
    repeated = _Repeated(kept)
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            repeated.key = key
            break
        seen.add(key)
    return repeated


def _repeated_key(body: bytes) -> str | None:
    """The path of the first key given twice in one object (`items[0].sku`), or None."""
    return _repeat_in(json.loads(body, object_pairs_hook=_keep_repeats), "")


def _repeat_in(value: object, path: str) -> str | None:
    if isinstance(value, _Repeated):
        return _joined(path, value.key)
    if isinstance(value, dict):
        items: Iterator[tuple[str, object]] = (
            (_joined(path, key), item) for key, item in value.items()
        )
    elif isinstance(value, list):
        items = ((f"{path}[{index}]", item) for index, item in enumerate(value))
    else:
        return None
    return next((found for name, item in items if (found := _repeat_in(item, name))), None)


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
