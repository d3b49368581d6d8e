"""Step 4. Its HTTP face, mounted by the gateway under /api/shipping."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import QueryParameter

from tests.example_shipping.service import ShippingService


class ShippingController(Controller):
    path = "/"

    @get("/", operation_id="listShipments", summary="Shipments of an order")
    async def list_shipments(
        self,
        order_id: Annotated[str, QueryParameter(max_length=64)],
        shipping: NamedDependency[ShippingService],
    ) -> list[dict[str, str]]:
        return await shipping.for_order(order_id)
