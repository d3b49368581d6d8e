"""HTTP for the orders module: schemas and the controller."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import JSONBody, PathParameter, QueryParameter

from app.kernel.idempotency import IdempotencyKeyHeader, fingerprint, replay_response
from app.kernel.identity import Caller
from app.kernel.pages import DEFAULT_LIMIT, Cursor, Limit, Page, page_of
from app.kernel.problems import AUTHENTICATED, WITH_BODY, problems
from app.modules.orders.currencies import CIRCULATING
from app.modules.orders.order import Order, OrderStatus
from app.modules.orders.service import OrderRequest, OrderService

MAX_ITEMS = 100
MAX_QUANTITY = 1_000
MAX_UNIT_PRICE = 100_000_000  # minor units; with the other limits every total stays below 2^53

# The circulating ISO 4217 codes, as an enum in the schema: clients and fuzzers see
# exactly which codes are accepted.
if TYPE_CHECKING:
    CurrencyCode = str
else:
    CurrencyCode = Literal[CIRCULATING]
OrderId = Annotated[str, PathParameter(max_length=64, description="An order id.")]


class OrderLine(msgspec.Struct, forbid_unknown_fields=True):
    sku: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    quantity: Annotated[int, msgspec.Meta(ge=1, le=MAX_QUANTITY)]
    unit_price: Annotated[
        int, msgspec.Meta(ge=1, le=MAX_UNIT_PRICE, description="Minor units (cents).")
    ]


class PlaceOrder(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    user_id: (
        Annotated[
            str,
            msgspec.Meta(
                min_length=1,
                max_length=64,
                description="Optional: the caller's own id (anyone else's is a 403).",
            ),
        ]
        | None
    ) = None
    currency: Annotated[
        CurrencyCode,
        msgspec.Meta(description="The ISO 4217 code of a circulating currency, e.g. EUR."),
    ]
    payment_token: Annotated[
        str,
        msgspec.Meta(
            pattern=r"^tok_[A-Za-z0-9_]{1,64}(?!\n)$",  # Python's `$` alone allows a final \n
            description="tok_visa, tok_chargeDeclined, tok_processing_error or tok_slow.",
            extra={"error": "not a payment token: tok_ then 1 to 64 letters, digits or _"},
        ),
    ]
    items: Annotated[list[OrderLine], msgspec.Meta(min_length=1, max_length=MAX_ITEMS)]


class OrderOut(msgspec.Struct):
    id: str
    user_id: str
    status: OrderStatus
    total: int
    currency: str
    items: list[OrderLine]
    cancel_requested: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, order: Order) -> OrderOut:
        """The order as clients see it (without its payment token or event sequence)."""
        return msgspec.convert(order, cls, from_attributes=True)


Orders = NamedDependency[OrderService]
# The caller, authenticated by the gateway, is request.user (one dependency fewer per request).
Me = Request[Caller, Any, Any]


class OrdersController(Controller):
    path = "/"

    @post(
        "/",
        operation_id="placeOrder",
        responses=problems(*AUTHENTICATED, *WITH_BODY, 403, 409, 422),
        summary="Place an order; payment follows asynchronously",
        description=(
            "201 with the order PENDING. The order's user must be known to orders: right "
            "after registration it may not be yet; orders waits a bounded time, then answers "
            "409 with Retry-After. Retrying after that delay succeeds."
        ),
    )
    async def place(
        self,
        data: JSONBody[PlaceOrder],
        orders: Orders,
        request: Me,
        idempotency_key: IdempotencyKeyHeader = None,
    ) -> Response[OrderOut]:
        wanted = msgspec.convert(data, OrderRequest, from_attributes=True)
        if idempotency_key is None:
            placed = await orders.place(request.user, wanted)
            return Response(OrderOut.of(placed), status_code=201)
        write = orders.idempotent_write(
            scope=f"user:{request.user.id}",
            key=idempotency_key,
            fingerprint=fingerprint("POST /api/orders", msgspec.json.encode(data)),
            status=201,
            render=lambda placed: msgspec.json.encode(OrderOut.of(placed)),
        )
        stored, replayed = await orders.place_once(write, request.user, wanted)
        return replay_response(stored, replayed, OrderOut)

    @get(
        "/",
        operation_id="listOrders",
        responses=problems(*AUTHENTICATED),
        summary="List orders, filtered by user and status",
    )
    async def list_orders(
        self,
        orders: Orders,
        request: Me,
        user_id: Annotated[str | None, QueryParameter(max_length=64)] = None,
        status: Annotated[
            OrderStatus | None, QueryParameter(description="Only orders in this status.")
        ] = None,
        limit: Limit = DEFAULT_LIMIT,
        cursor: Cursor = None,
    ) -> Page[OrderOut]:
        rows = await orders.page(
            request.user, user_id=user_id, status=status, after=cursor, limit=limit + 1
        )
        return page_of([OrderOut.of(order) for order in rows], limit)

    @get(
        "/{order_id:str}",
        operation_id="getOrder",
        responses=problems(*AUTHENTICATED, 404),
        summary="Read an order",
    )
    async def get_order(self, order_id: OrderId, orders: Orders, request: Me) -> OrderOut:
        return OrderOut.of(await orders.get(order_id, request.user))

    @post(
        "/{order_id:str}/cancel",
        operation_id="cancelOrder",
        responses={
            **problems(*AUTHENTICATED, 404, 409),
            202: ResponseSpec(OrderOut, description="Accepted: the refund follows"),
        },
        summary="Cancel an order",
        description=(
            "200: a PENDING order is CANCELLED at once. 202: a PAID order stays PAID until "
            "its refund arrives, then becomes REFUNDED; cancelling it again is a no-op 202. "
            "409 for an order that is already CANCELLED or REFUNDED."
        ),
        status_code=200,
    )
    async def cancel(self, order_id: OrderId, orders: Orders, request: Me) -> Response[OrderOut]:
        order, final = await orders.cancel(order_id, request.user)
        return Response(OrderOut.of(order), status_code=200 if final else 202)
