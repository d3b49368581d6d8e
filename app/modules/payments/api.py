"""HTTP for the payments module: read-only; payments are made by events, not requests."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import PathParameter, QueryParameter

from app.kernel.identity import Caller
from app.kernel.pages import DEFAULT_LIMIT, Cursor, Limit, Page, page_of
from app.kernel.problems import AUTHENTICATED, problems
from app.modules.payments.payment import Payment, PaymentStatus
from app.modules.payments.service import PaymentService


class PaymentOut(msgspec.Struct):
    id: str
    order_id: str
    user_id: str
    amount: int
    currency: str
    status: PaymentStatus
    attempts: int
    failure_reason: str | None
    created_at: datetime

    @classmethod
    def of(cls, payment: Payment) -> PaymentOut:
        """The payment as clients see it (without its card token or event sequence)."""
        return msgspec.convert(payment, cls, from_attributes=True)


Payments = NamedDependency[PaymentService]
# The caller, authenticated by the gateway, is request.user (one dependency fewer per request).
Me = Request[Caller, Any, Any]


class PaymentsController(Controller):
    path = "/"

    @get(
        "/",
        operation_id="listPayments",
        responses=problems(*AUTHENTICATED),
        summary="List payments, optionally for one order or one user",
    )
    async def list_payments(
        self,
        payments: Payments,
        request: Me,
        order_id: Annotated[
            str | None, QueryParameter(max_length=64, description="Only this order's.")
        ] = None,
        user_id: Annotated[
            str | None, QueryParameter(max_length=64, description="Only this user's.")
        ] = None,
        limit: Limit = DEFAULT_LIMIT,
        cursor: Cursor = None,
    ) -> Page[PaymentOut]:
        rows = await payments.page(
            request.user, order_id=order_id, user_id=user_id, after=cursor, limit=limit + 1
        )
        return page_of([PaymentOut.of(payment) for payment in rows], limit)

    @get(
        "/{payment_id:str}",
        operation_id="getPayment",
        responses=problems(*AUTHENTICATED, 404),
        summary="Read a payment",
    )
    async def get_payment(
        self,
        payments: Payments,
        request: Me,
        payment_id: Annotated[str, PathParameter(max_length=64)],
    ) -> PaymentOut:
        return PaymentOut.of(await payments.get(payment_id, request.user))
