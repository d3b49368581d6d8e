"""One system from the outside (issue 15, point 4): the split gateway's /schema/openapi.json
describes every module's routes (served by the module processes) with the gateway's own,
operation for operation as the monolith's document does, and its docs page renders from it.
Built, not started: nothing connects to NATS, and the document needs nothing that does."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any, cast

import httpx
import pytest
from litestar import Litestar

from app.main import create_app, create_gateway_app
from tests.support.seams import fast_settings

pytestmark = pytest.mark.anyio

DOCUMENT = "/schema/openapi.json"
METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def split_gateway() -> Litestar:
    return create_gateway_app(
        fast_settings(
            ephemeral="true", bus_url="nats://127.0.0.1:4222", secret_key=secrets.token_urlsafe(48)
        )
    )


@pytest.fixture(scope="module")
async def documents(
    split_gateway: Litestar,
) -> AsyncIterator[tuple[dict[str, Any], dict[str, Any]]]:
    monolith = create_app(fast_settings(ephemeral="true"))
    yield await document(split_gateway), await document(monolith)


async def anonymous_get(app: Litestar, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=cast(Any, app))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver.local") as c:
        return await c.get(path)


async def document(app: Litestar) -> dict[str, Any]:
    response = await anonymous_get(app, DOCUMENT)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def operations(spec: dict[str, Any]) -> dict[tuple[str, str], str]:
    """(path, method) -> operationId."""
    return {
        (path, method): operation.get("operationId", "")
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    }


async def test_the_split_gateway_documents_every_operation_of_the_system(
    documents: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    split, monolith = documents
    missing = set(operations(monolith).items()) - set(operations(split).items())
    assert missing == set()
    # Every module's own routes, not only the gateway's.
    for prefix in ("/api/users", "/api/orders", "/api/payments", "/api/notifications"):
        assert prefix in split["paths"], sorted(split["paths"])
    assert split["info"]["title"] == "Seams (split mode)"


async def test_every_schema_the_split_document_refers_to_is_in_it(
    documents: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    split, _ = documents
    text = repr(split["paths"])
    names = set(split["components"]["schemas"])
    referred = {part.split("'")[0] for part in text.split("#/components/schemas/")[1:]}
    assert referred - names == set()
    assert split["components"]["securitySchemes"]


async def test_the_split_gateways_docs_page_renders(split_gateway: Litestar) -> None:
    response = await anonymous_get(split_gateway, "/schema")
    assert response.status_code == 200
    assert "swagger" in response.text.lower()
