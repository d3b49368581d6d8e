"""The OpenAPI document and its docs page.

The document says what the gateway enforces: a Struct that refuses unknown fields is
documented with `additionalProperties: false` (Litestar's own Struct plugin leaves it open,
so clients and fuzzers would think extra fields are fine).

The docs page is Swagger UI, from files this app serves (no CDN): it renders offline, and
what it runs is the pinned package's code, not whatever a CDN serves that day.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Response, Router
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar.exceptions import NotFoundException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.static_files import create_static_files_router

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator
    from litestar.openapi.spec import Schema
    from litestar.typing import FieldDefinition

DOCS_PATH = "/schema"
ASSETS_PATH = f"{DOCS_PATH}/assets"


class StrictStructSchemaPlugin(StructSchemaPlugin):
    def to_openapi_schema(
        self, field_definition: FieldDefinition, schema_creator: SchemaCreator
    ) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        info = msgspec.inspect.type_info(field_definition.type_)
        if isinstance(info, msgspec.inspect.StructType) and info.forbid_unknown_fields:
            schema.additional_properties = False
        return schema


def swagger_ui_files() -> Path:
    """Swagger UI's built files, as the pinned swagger-ui-py package ships them (Apache-2.0;
    its LICENSE is beside them). Found without importing that package's web-framework code."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("swagger-ui-py is not installed: pip install -e .")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


async def _problem_for_unknown_path(response: Response[Any]) -> Response[Any]:
    # Litestar answers an unknown docs path with an HTML page; every 404 here is problem+json.
    if response.status_code == 404:
        raise NotFoundException(f"nothing is served here: the docs are at {DOCS_PATH}")
    return response


def openapi_config(*, title: str, description: str) -> OpenAPIConfig:
    """The docs at /schema (and /schema/swagger) with everything the page loads served from
    /schema/assets by this app, so they render with no network."""
    return OpenAPIConfig(
        title=title,
        version="0.1.0",
        description=description,
        path=DOCS_PATH,
        render_plugins=[
            SwaggerRenderPlugin(
                js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
                css_url=f"{ASSETS_PATH}/swagger-ui.css",
                standalone_preset_js_url=f"{ASSETS_PATH}/swagger-ui-standalone-preset.js",
                favicon=f"<link rel='icon' href='{ASSETS_PATH}/favicon-32x32.png'>",
                path=["/", "/swagger"],
            )
        ],
        openapi_router=Router(
            DOCS_PATH,
            route_handlers=[
                create_static_files_router(
                    path=ASSETS_PATH.removeprefix(DOCS_PATH),
                    directories=[swagger_ui_files()],
                    include_in_schema=False,
                )
            ],
            include_in_schema=False,
            after_request=_problem_for_unknown_path,
        ),
    )
