"""Bad input through the gateway: always a 4xx with one problem+json shape, never a 500,
never a half-written state (no order, no payment, no OrderPlaced handled).

Every case runs on each store backend, against one system per backend shared by the whole
module: a fresh system per case would cost a second of PostgreSQL databases each. Cases
stay independent: each uses its own user or email and checks what it wrote by difference.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from httpx import Response

from app.kernel.ids import new_id
from tests.support.seams import Seams, fast_settings, running
from tests.support.stores import BACKENDS, store_urls

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module", params=BACKENDS)
async def shared_seams(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Seams]:
    """The whole system through its gateway, once per store backend for this module."""
    data = tmp_path_factory.mktemp(request.param)
    async with store_urls(request.param, data) as urls, running(fast_settings(**urls)) as seams:
        yield seams


_emails = itertools.count(1)


def fresh_email() -> str:
    return f"bad-input.{next(_emails)}@example.com"


PROBLEM_FIELDS = {"type", "title", "status", "detail", "instance", "request_id"}
INVALID_TITLE = "Bad Request"  # every problem's title is its status phrase

Body = dict[str, Any]


def assert_problem(response: Response, status: int) -> Body:
    """The one error shape: RFC 9457 problem+json carrying the request id of its header."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: Body = response.json()
    assert body.keys() >= PROBLEM_FIELDS, body
    assert body["status"] == status
    assert body["instance"] == response.request.url.path
    assert body["request_id"] == response.headers["x-request-id"]
    assert isinstance(body["detail"], str) and body["detail"]
    return body


def assert_invalid(response: Response, names: str | None) -> Body:
    """A 400; for a validation error, an `errors` entry that names the offending field: in
    `field` where Litestar gives it, else in the message (`body`: missing or unknown field)."""
    body = assert_problem(response, 400)
    assert body["title"] == INVALID_TITLE
    if names is not None:
        errors = body.get("errors")
        assert errors, body
        assert any(
            error["field"] == names or (error["field"] == "body" and names in error["message"])
            for error in errors
        ), errors
    return body


@dataclass(frozen=True)
class Written:
    """What a request could have half-written, system-wide."""

    orders: list[str]
    payments: list[str]
    order_placed_seen: int


async def written(seams: Seams) -> Written:
    await seams.settle()
    orders = await seams.all_pages("/api/orders")
    payments = await seams.all_pages("/api/payments")
    seen = sum(n for (kind, _, _), n in seams.runtime.bus.stats.items() if kind == "OrderPlaced")
    return Written([o["id"] for o in orders], [p["id"] for p in payments], seen)


def valid_order(user_id: str) -> Body:
    return {
        "user_id": user_id,
        "currency": "EUR",
        "payment_token": "tok_visa",
        "items": [{"sku": "book", "quantity": 2, "unit_price": 1250}],
    }


def changed(**fields: Any) -> Callable[[Body], Body]:
    return lambda order: {**order, **fields}


def without(field: str) -> Callable[[Body], Body]:
    return lambda order: {k: v for k, v in order.items() if k != field}


def with_line(**fields: Any) -> Callable[[Body], Body]:
    return lambda order: {**order, "items": [{**order["items"][0], **fields}]}


def raw(content: bytes) -> Callable[[Body], bytes]:
    return lambda _order: content


# (how the body is made from a valid order, the name the error must give)
BAD_ORDERS = [
    pytest.param(raw(b'{"user_id": "u", "items": ['), None, id="malformed JSON"),
    pytest.param(lambda order: [order], "object", id="JSON array, not object"),
    pytest.param(without("items"), "items", id="missing items"),
    pytest.param(changed(items=[]), "items", id="no items"),
    pytest.param(lambda order: {**order, "items": order["items"] * 101}, "items", id="101 items"),
    pytest.param(with_line(quantity=0), "items[0].quantity", id="quantity 0"),
    pytest.param(with_line(quantity=-1), "items[0].quantity", id="quantity -1"),
    pytest.param(with_line(quantity=1001), "items[0].quantity", id="quantity 1001"),
    pytest.param(with_line(quantity="2"), "items[0].quantity", id="quantity as string"),
    pytest.param(with_line(unit_price=0), "items[0].unit_price", id="unit_price 0"),
    pytest.param(with_line(unit_price=100_000_001), "items[0].unit_price", id="unit_price big"),
    pytest.param(with_line(colour="red"), "items[0].colour", id="unknown line field"),
    pytest.param(changed(currency="EURO"), "currency", id="currency EURO"),
    pytest.param(changed(currency="XXQ"), "currency", id="currency not ISO 4217"),
    pytest.param(changed(currency="eur"), "currency", id="currency lowercase"),
    pytest.param(changed(coupon="FREE"), "coupon", id="unknown field"),
    pytest.param(changed(payment_token="visa"), "payment_token", id="token pattern"),
    pytest.param(changed(user_id="u" * 65), "user_id", id="user_id 65 chars"),
    pytest.param(changed(user_id={"$gt": ""}), "user_id", id="MongoDB operator user_id"),
]


@pytest.mark.parametrize(("make", "names"), BAD_ORDERS)
async def test_a_bad_order_is_a_400_problem_and_writes_nothing(
    shared_seams: Seams, make: Callable[[Body], Any], names: str | None
) -> None:
    seams = shared_seams
    user = await seams.register("Ada")
    before = await written(seams)
    body = make(valid_order(user["id"]))
    content = body if isinstance(body, bytes) else json.dumps(body).encode()

    response = await seams.client.post(
        "/api/orders",
        content=content,
        headers={**user["headers"], "content-type": "application/json"},
    )

    assert_invalid(response, names)
    assert await written(seams) == before
    assert (await seams.get("/api/orders", user_id=user["id"]))["items"] == []


async def test_an_empty_order_body_is_told_the_body_is_missing(shared_seams: Seams) -> None:
    seams = shared_seams
    before = await written(seams)

    response = await seams.client.post(
        "/api/orders", content=b"", headers={"content-type": "application/json"}
    )

    body = assert_invalid(response, None)
    assert "body" in body["detail"].lower(), body
    assert await written(seams) == before


async def test_a_body_that_is_not_utf8_is_a_400_not_a_500(shared_seams: Seams) -> None:
    seams = shared_seams
    before = await written(seams)

    response = await seams.client.post(
        "/api/orders", content=b'{"user_id": "\xff"}', headers={"content-type": "application/json"}
    )

    assert_invalid(response, None)
    assert await written(seams) == before


async def test_a_mongodb_operator_looking_sku_is_plain_data_stored_verbatim(
    shared_seams: Seams,
) -> None:
    seams = shared_seams
    user = await seams.register("Ada")
    order = valid_order(user["id"])
    order["items"] = [{"sku": "$where", "quantity": 1, "unit_price": 100}]

    response = await seams.client.post("/api/orders", json=order, headers=user["headers"])

    assert response.status_code == 201, response.text
    placed = response.json()
    assert placed["items"][0]["sku"] == "$where"
    await seams.settle()
    stored = await seams.get(f"/api/orders/{placed['id']}")
    assert stored["items"] == [{"sku": "$where", "quantity": 1, "unit_price": 100}]
    assert stored["status"] == "PAID"


# Users.

BAD_REGISTRATIONS = [
    pytest.param({"email": "not-an-email"}, "email", id="bad email"),
    pytest.param({"password": "short"}, "password", id="short password"),
    pytest.param({"name": ""}, "name", id="empty name"),
    pytest.param({"role": "admin"}, "role", id="unknown field"),
]


@pytest.mark.parametrize(("change", "field"), BAD_REGISTRATIONS)
async def test_a_bad_registration_is_a_400_problem_and_registers_nobody(
    shared_seams: Seams, change: Body, field: str
) -> None:
    seams = shared_seams
    before = await seams.all_pages("/api/users")
    registration = {"name": "Ada", "email": fresh_email(), "password": "correct horse"}

    response = await seams.client.post("/api/users", json={**registration, **change})

    assert_invalid(response, field)
    assert await seams.all_pages("/api/users") == before


async def test_an_email_taken_in_another_case_is_a_409_problem(shared_seams: Seams) -> None:
    seams = shared_seams
    first = await seams.register("Ada")

    response = await seams.client.post(
        "/api/users",
        json={"name": "Eve", "email": first["email"].upper(), "password": "correct horse"},
    )

    body = assert_problem(response, 409)
    assert "already exists" in body["detail"]
    users = await seams.all_pages("/api/users")
    assert [u["id"] for u in users if u["email"].lower() == first["email"]] == [first["id"]]


# Unknown ids, methods and list parameters.

UNKNOWN = new_id()


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        pytest.param("PATCH", f"/api/users/{UNKNOWN}", {"name": "Zed"}, id="patch user"),
        pytest.param("GET", f"/api/users/{UNKNOWN}", None, id="user"),
        pytest.param("GET", f"/api/orders/{UNKNOWN}", None, id="order"),
        pytest.param("POST", f"/api/orders/{UNKNOWN}/cancel", None, id="cancel order"),
        pytest.param("GET", f"/api/payments/{UNKNOWN}", None, id="payment"),
        pytest.param("GET", f"/api/notifications/{UNKNOWN}", None, id="notification"),
    ],
)
async def test_an_unknown_id_is_a_404_problem(
    shared_seams: Seams, method: str, path: str, body: Body | None
) -> None:
    response = await shared_seams.client.request(method, path, json=body)

    problem = assert_problem(response, 404)
    assert UNKNOWN in problem["detail"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        pytest.param("DELETE", "/api/orders", id="delete orders"),
        pytest.param("PUT", f"/api/users/{UNKNOWN}", id="put user"),
    ],
)
async def test_a_wrong_method_is_a_405_problem_naming_the_allowed_ones(
    shared_seams: Seams, method: str, path: str
) -> None:
    response = await shared_seams.client.request(method, path)

    assert_problem(response, 405)
    assert "GET" in response.headers["allow"]


LISTS = ("/api/users", "/api/orders", "/api/payments", "/api/notifications")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        pytest.param({"limit": "0"}, "limit", id="limit 0"),
        pytest.param({"limit": "201"}, "limit", id="limit 201"),
        pytest.param({"limit": "abc"}, "limit", id="limit abc"),
        pytest.param({"cursor": "../../etc"}, "cursor", id="cursor path"),
    ],
)
async def test_a_bad_page_parameter_is_a_400_problem_on_every_list(
    shared_seams: Seams, params: dict[str, str], field: str
) -> None:
    for path in LISTS:
        response = await shared_seams.client.get(path, params=params)
        assert_invalid(response, field)


# NUL characters: PostgreSQL text cannot hold them, so they must be refused before a store.


@pytest.mark.parametrize(
    "path",
    [
        "/api/users/%00",
        "/api/orders/%00",
        "/api/payments/%00",
        "/api/notifications/%00",
    ],
)
async def test_an_id_with_a_nul_character_is_a_4xx_problem(shared_seams: Seams, path: str) -> None:
    response = await shared_seams.client.get(path)

    assert response.status_code in (400, 404), response.text
    assert_problem(response, response.status_code)


@pytest.mark.parametrize(
    ("path", "params"),
    [
        pytest.param("/api/orders", {"user_id": "a\x00"}, id="orders by user"),
        pytest.param("/api/payments", {"order_id": "a\x00"}, id="payments by order"),
        pytest.param("/api/notifications", {"user_id": "a\x00"}, id="notifications by user"),
        pytest.param("/api/notifications", {"order_id": "a\x00"}, id="notifications by order"),
    ],
)
async def test_a_filter_with_a_nul_character_finds_nothing_or_is_a_400(
    shared_seams: Seams, path: str, params: dict[str, str]
) -> None:
    response = await shared_seams.client.get(path, params=params)

    if response.status_code == 200:
        assert response.json()["items"] == []
    else:
        assert_invalid(response, next(iter(params)))


@pytest.mark.parametrize("field", ["name", "email"])
async def test_a_registration_with_a_nul_character_is_a_400_problem(
    shared_seams: Seams, field: str
) -> None:
    seams = shared_seams
    before = await seams.all_pages("/api/users")
    registration = {"name": "Ada", "email": fresh_email(), "password": "correct horse"}
    registration[field] = registration[field].replace("a", "a\x00", 1)

    response = await seams.client.post("/api/users", json=registration)

    assert_invalid(response, field)
    assert await seams.all_pages("/api/users") == before


async def test_renaming_a_user_with_a_nul_character_is_a_400_problem(shared_seams: Seams) -> None:
    seams = shared_seams
    user = await seams.register("Ada")

    response = await seams.client.patch(f"/api/users/{user['id']}", json={"name": "Ada\x00"})

    assert_invalid(response, "name")
    assert (await seams.get(f"/api/users/{user['id']}"))["name"] == "Ada"


# Limits, the replica wait and request ids (one store is enough: the gateway decides these).


async def test_a_body_over_the_limit_is_a_413_problem_and_writes_nothing() -> None:
    async with running(fast_settings(ephemeral="true", max_body_bytes="2048")) as seams:
        user = await seams.register("Ada")
        order = valid_order(user["id"])
        order["items"][0]["sku"] = "x" * 4096

        response = await seams.client.post("/api/orders", json=order, headers=user["headers"])

        assert_problem(response, 413)
        assert await written(seams) == Written([], [], 0)


async def test_a_streamed_body_over_the_limit_is_a_413_problem() -> None:
    async with running(fast_settings(ephemeral="true", max_body_bytes="2048")) as seams:

        async def chunks() -> Any:
            for _ in range(8):
                yield b" " * 512

        response = await seams.client.post(
            "/api/users", content=chunks(), headers={"content-type": "application/json"}
        )

        assert "content-length" not in response.request.headers
        assert_problem(response, 413)
        assert [u["id"] for u in await seams.all_pages("/api/users")] == [seams.admin_id]


async def test_an_order_for_a_user_orders_has_not_seen_is_a_409_with_retry_after() -> None:
    async with running(fast_settings(ephemeral="true", replica_wait_seconds="0.2")) as seams:
        stranger = await seams.unannounced_user()

        response = await seams.client.post(
            "/api/orders", json=valid_order(stranger["id"]), headers=stranger["headers"]
        )

        body = assert_problem(response, 409)
        assert response.headers["retry-after"] == "1"
        assert stranger["id"] in body["detail"]
        assert await written(seams) == Written([], [], 0)


async def test_an_order_right_after_registration_waits_for_the_replica_and_succeeds() -> None:
    async with running(fast_settings(ephemeral="true", replica_wait_seconds="0.2")) as seams:
        stranger = await seams.unannounced_user()
        refused = await seams.client.post(
            "/api/orders", json=valid_order(stranger["id"]), headers=stranger["headers"]
        )
        assert refused.status_code == 409
        user = await seams.register("Ada")  # no settle: the replica may not have it yet

        response = await seams.client.post(
            "/api/orders", json=valid_order(user["id"]), headers=user["headers"]
        )

        assert response.status_code == 201, response.text
        await seams.settle()
        assert (await seams.get(f"/api/orders/{response.json()['id']}"))["status"] == "PAID"


async def test_a_well_formed_request_id_is_echoed_in_the_header_and_the_problem() -> None:
    async with running(fast_settings(ephemeral="true")) as seams:
        response = await seams.client.get(
            f"/api/orders/{UNKNOWN}", headers={"X-Request-ID": "client-42_a.b:c"}
        )

        assert response.headers["x-request-id"] == "client-42_a.b:c"
        assert assert_problem(response, 404)["request_id"] == "client-42_a.b:c"


@pytest.mark.parametrize(
    "offered",
    [
        pytest.param("r" * 200, id="200 characters"),
        pytest.param("has spaces in it", id="spaces"),
        pytest.param("semi;colon", id="semicolon"),
        pytest.param("", id="empty"),
    ],
)
async def test_a_malformed_request_id_is_replaced_by_a_generated_one(offered: str) -> None:
    async with running(fast_settings(ephemeral="true")) as seams:
        response = await seams.client.get(
            f"/api/orders/{UNKNOWN}", headers={"X-Request-ID": offered}
        )

        generated = response.headers["x-request-id"]
        assert generated != offered
        assert 1 <= len(generated) <= 128
        assert assert_problem(response, 404)["request_id"] == generated
