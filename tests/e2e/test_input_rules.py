"""What the gateway refuses before a handler sees it, and how it says so: anchored patterns
that a trailing newline cannot slip past, duplicate JSON keys, bodies that are not JSON,
currencies that are not money in circulation, every missing field named, messages a person
can act on, and one title per status.

One system in memory for the whole module: the gateway decides all of this, whatever the
store, so one backend is enough (tests/e2e/test_bad_input.py covers every backend).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from functools import cache
from http import HTTPStatus
from typing import Any

import pytest
from httpx import Response
from hypothesis import given, settings
from hypothesis import strategies as st

from app.main import create_app
from tests.support.seams import Seams, fast_settings, running

pytestmark = pytest.mark.anyio

BODY_LIMIT = 4096
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def seams() -> AsyncIterator[Seams]:
    settings = fast_settings(ephemeral="true", max_body_bytes=str(BODY_LIMIT))
    async with running(settings) as system:
        yield system


@pytest.fixture(scope="module")
async def user(seams: Seams) -> dict[str, Any]:
    return await seams.register("Ada")


def an_order(**fields: Any) -> dict[str, Any]:
    order = {
        "currency": "EUR",
        "payment_token": "tok_visa",
        "items": [{"sku": "book", "quantity": 1, "unit_price": 1250}],
    }
    return {**order, **fields}


def a_registration(email: str, **fields: Any) -> dict[str, Any]:
    return {"name": "Ada", "email": email, "password": "correct horse", **fields}


def problem_of(response: Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"] == HTTPStatus(status).phrase
    return body


def fields_named(problem: dict[str, Any]) -> set[str]:
    return {error["field"] for error in problem.get("errors", [])}


# Anchored patterns: `$` also matches before a final newline in Python's re.


async def test_a_payment_token_with_a_trailing_newline_is_a_400(
    seams: Seams, user: dict[str, Any]
) -> None:
    response = await seams.client.post(
        "/api/orders", json=an_order(payment_token="tok_visa\n"), headers=user["headers"]
    )

    assert fields_named(problem_of(response, 400)) == {"payment_token"}


async def test_an_email_with_a_trailing_newline_is_a_400(seams: Seams) -> None:
    response = await seams.client.post("/api/users", json=a_registration("newline@example.com\n"))

    assert fields_named(problem_of(response, 400)) == {"email"}


async def test_a_cursor_with_a_trailing_newline_is_a_400(seams: Seams) -> None:
    response = await seams.client.get("/api/orders", params={"cursor": "0a1b\n"})

    assert fields_named(problem_of(response, 400)) == {"cursor"}


@cache
def anchored_patterns() -> list[str]:
    """Every `$`-anchored pattern the OpenAPI document promises clients."""
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            pattern = node.get("pattern")
            if isinstance(pattern, str) and pattern.endswith("$"):
                found.append(pattern)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(create_app(fast_settings(ephemeral="true")).openapi_schema.to_schema())
    return found


def test_the_schema_has_anchored_patterns_to_check() -> None:
    assert len(anchored_patterns()) >= 3


@settings(max_examples=50, deadline=None)
@given(st.data())
def test_no_anchored_pattern_in_the_schema_matches_a_value_with_a_trailing_newline(
    data: st.DataObject,
) -> None:
    pattern = data.draw(st.sampled_from(anchored_patterns()))
    value = data.draw(st.from_regex(pattern, fullmatch=True).filter(lambda s: "\n" not in s))

    assert re.search(pattern, value)
    assert re.search(pattern, value + "\n") is None


# Duplicate keys: a decoder would keep the last one silently.


async def test_a_duplicate_key_is_a_400_naming_the_key(seams: Seams) -> None:
    body = b'{"name": "Ada", "name": "Eve", "email": "dup@example.com", "password": "horse staple"}'

    response = await seams.client.post(
        "/api/users", content=body, headers={"content-type": "application/json"}
    )

    problem = problem_of(response, 400)
    assert fields_named(problem) == {"name"}
    assert "more than once" in problem["detail"]
    emails = [u["email"] for u in await seams.all_pages("/api/users")]
    assert "dup@example.com" not in emails


async def test_a_duplicate_key_in_a_nested_object_is_named_by_its_path(
    seams: Seams, user: dict[str, Any]
) -> None:
    body = (
        b'{"currency": "EUR", "payment_token": "tok_visa", "items": '
        b'[{"sku": "book", "quantity": 1, "unit_price": 1250, "quantity": 900}]}'
    )

    response = await seams.client.post(
        "/api/orders", content=body, headers={**user["headers"], "content-type": "application/json"}
    )

    assert fields_named(problem_of(response, 400)) == {"items[0].quantity"}


async def test_a_key_repeated_in_different_objects_is_not_a_duplicate(
    seams: Seams, user: dict[str, Any]
) -> None:
    lines = [{"sku": "book", "quantity": 1, "unit_price": 1250}] * 2
    body = an_order(items=lines, payment_token="tok_visa")

    response = await seams.client.post("/api/orders", json=body, headers=user["headers"])

    assert response.status_code == 201, response.text


async def test_a_string_that_looks_like_a_key_is_not_a_duplicate(seams: Seams) -> None:
    body = (
        b'{"name": "Ada \\"name\\": x", "email": "looks@example.com", '
        b'"password": "correct \\"password\\":  horse"}'
    )

    response = await seams.client.post(
        "/api/users", content=body, headers={"content-type": "application/json"}
    )

    assert response.status_code == 201, response.text
    assert response.json()["name"] == 'Ada "name": x'


# Content types: a body that is not declared JSON is not parsed as JSON.


@pytest.mark.parametrize(
    "content_type",
    [
        pytest.param("text/plain", id="text/plain"),
        pytest.param("application/x-www-form-urlencoded", id="form"),
        pytest.param("multipart/form-data; boundary=x", id="multipart"),
        pytest.param(None, id="none"),
    ],
)
async def test_a_body_that_is_not_declared_json_is_a_415_naming_what_is_accepted(
    seams: Seams, content_type: str | None
) -> None:
    email = f"not-json-{len(content_type or '')}@example.com"
    body = b'{"name": "Ada", "email": "%s", "password": "correct horse"}' % email.encode()
    headers = {} if content_type is None else {"content-type": content_type}

    response = await seams.client.post("/api/users", content=body, headers=headers)

    problem = problem_of(response, 415)
    assert "application/json" in problem["detail"]
    emails = [u["email"] for u in await seams.all_pages("/api/users")]
    assert email not in emails


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "application/merge-patch+json"]
)
async def test_json_media_types_are_accepted(seams: Seams, content_type: str) -> None:
    email = f"json-{len(content_type)}@example.com"
    body = b'{"name": "Ada", "email": "%s", "password": "correct horse"}' % email.encode()

    response = await seams.client.post(
        "/api/users", content=body, headers={"content-type": content_type}
    )

    assert response.status_code == 201, response.text


# Currencies: ISO 4217 also lists codes that are not money anyone pays with.


@pytest.mark.parametrize(
    "code",
    ["XXX", "XTS", "XAU", "XAG", "XPT", "XPD", "XDR", "XBA", "XSU", "XUA", "BOV", "USN", "CLF"],
)
async def test_a_currency_that_is_not_in_circulation_is_a_400(
    seams: Seams, user: dict[str, Any], code: str
) -> None:
    response = await seams.client.post(
        "/api/orders", json=an_order(currency=code), headers=user["headers"]
    )

    assert fields_named(problem_of(response, 400)) == {"currency"}


@pytest.mark.parametrize("code", ["EUR", "USD", "JPY", "XOF", "XAF", "XCD", "XPF", "CHF"])
async def test_a_circulating_currency_is_accepted(
    seams: Seams, user: dict[str, Any], code: str
) -> None:
    response = await seams.client.post(
        "/api/orders", json=an_order(currency=code), headers=user["headers"]
    )

    assert response.status_code == 201, response.text


# Messages a person can act on.


async def test_every_missing_field_is_named_by_its_own_name(seams: Seams) -> None:
    response = await seams.client.post("/api/users", json={"password": "correct horse"})

    problem = problem_of(response, 400)
    assert fields_named(problem) == {"name", "email"}
    assert "name" in problem["detail"] and "email" in problem["detail"]


async def test_missing_nested_fields_are_named_by_their_paths(
    seams: Seams, user: dict[str, Any]
) -> None:
    order = {"currency": "EUR", "items": [{"sku": "book", "quantity": 1}, {"quantity": 2}]}

    response = await seams.client.post("/api/orders", json=order, headers=user["headers"])

    assert fields_named(problem_of(response, 400)) == {
        "payment_token",
        "items[0].unit_price",
        "items[1].sku",
        "items[1].unit_price",
    }


async def test_an_unknown_field_is_named_by_its_path(seams: Seams, user: dict[str, Any]) -> None:
    order = an_order(items=[{"sku": "book", "quantity": 1, "unit_price": 1, "colour": "red"}])

    response = await seams.client.post("/api/orders", json=order, headers=user["headers"])

    assert fields_named(problem_of(response, 400)) == {"items[0].colour"}


async def test_a_bad_email_says_it_is_not_an_email_address(seams: Seams) -> None:
    response = await seams.client.post("/api/users", json=a_registration("not-an-email"))

    problem = problem_of(response, 400)
    assert problem["errors"] == [{"field": "email", "message": "not an email address"}]
    assert "regex" not in problem["detail"] and "^" not in problem["detail"]


async def test_a_bad_payment_token_says_what_a_token_looks_like(
    seams: Seams, user: dict[str, Any]
) -> None:
    response = await seams.client.post(
        "/api/orders", json=an_order(payment_token="visa"), headers=user["headers"]
    )

    problem = problem_of(response, 400)
    assert "regex" not in problem["detail"]
    assert "tok_" in problem["detail"]


async def test_a_body_over_the_limit_is_a_413_naming_the_limit_in_bytes(seams: Seams) -> None:
    response = await seams.client.post(
        "/api/users", json=a_registration("big@example.com", name="x" * BODY_LIMIT)
    )

    problem = problem_of(response, 413)
    assert f"{BODY_LIMIT} bytes" in problem["detail"]


async def test_every_kind_of_error_is_titled_with_its_status_phrase(
    seams: Seams, user: dict[str, Any]
) -> None:
    client = seams.client
    answers = [
        await client.post("/api/users", json={"name": ""}),  # 400, decoded here
        await client.get("/api/orders", params={"limit": "0"}),  # 400, Litestar's
        await client.get("/api/orders", headers={"Authorization": "Bearer nope"}),  # 401
        await client.get("/api/orders/nope"),  # 404 from a module
        await client.get("/api/nowhere"),  # 404 with no route
        await client.delete("/api/orders"),  # 405
        await client.post("/api/users", json=a_registration(user["email"])),  # 409
        await client.post("/api/users", content=b"x" * (BODY_LIMIT + 1), headers=JSON),  # 413
        await client.post("/api/users", content=b"{}", headers={"content-type": "text/plain"}),
    ]

    statuses = [answer.status_code for answer in answers]
    assert statuses == [400, 400, 401, 404, 404, 405, 409, 413, 415]
    for answer in answers:
        problem_of(answer, answer.status_code)
