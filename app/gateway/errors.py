"""One error shape for every failure: RFC 9457 application/problem+json with the request id.

Domain errors are mapped to HTTP here and nowhere else; an unexpected error is logged in
full and answered with no internal detail. Every problem's type is about:blank, so its title
is the status's own phrase (RFC 9457 4.2.1), from one table: `title_for`.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import ExceptionHandlersMap

from app.gateway.auth import REALM
from app.gateway.request_id import request_id_of
from app.kernel.errors import DomainError, InvalidInput, StoreUnavailable
from app.kernel.sql import unreachable

log = logging.getLogger("app.gateway")

PROBLEM_JSON = "application/problem+json"


def title_for(status: int) -> str:
    """The one title of every problem with this status: its HTTP phrase ("Not Found")."""
    return HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"


def problem(
    request: Request[Any, Any, Any],
    status: int,
    title: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> Response[dict[str, Any]]:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        "request_id": request_id_of(request.scope),
        **extensions,
    }
    if status == 401:  # every 401 names the scheme it wants (RFC 9110 11.6.1, RFC 6750 3)
        headers = {"WWW-Authenticate": REALM, **(headers or {})}
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _domain_error(request: Request[Any, Any, Any], error: DomainError) -> Response[Any]:
    extensions: dict[str, Any] = {}
    if isinstance(error, InvalidInput):
        extensions["errors"] = [{"field": name, "message": says} for name, says in error.errors]
    return problem(
        request,
        error.status,
        title_for(error.status),
        error.detail,
        headers=error.headers,
        **extensions,
    )


def _validation_error(request: Request[Any, Any, Any], error: ValidationException) -> Response[Any]:
    errors = [
        {"field": item.get("key") or item.get("source") or "body", "message": item.get("message")}
        for item in (error.extra if isinstance(error.extra, list) else [])
        if isinstance(item, dict)
    ]
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or error.detail
    return problem(request, 400, title_for(400), detail, errors=errors)


def _http_error(request: Request[Any, Any, Any], error: HTTPException) -> Response[Any]:
    status = error.status_code
    title = title_for(status)
    detail = error.detail if error.detail and error.detail != title else title
    if status == 413 and detail == title:  # Litestar's body limit: say which limit
        limit = request.route_handler.resolve_request_max_body_size()
        detail = f"the request body is over the limit of {limit} bytes: send a smaller one"
    extensions = {"errors": [{"field": "body", "message": detail}]} if status == 400 else {}
    headers = dict(error.headers or {})
    if status == 429 and "Retry-After" not in headers:
        # Litestar's rate limit says when the window resets; clients read Retry-After.
        headers["Retry-After"] = headers.get("RateLimit-Reset", "1")
    return problem(request, status, title, detail, headers=headers, **extensions)


def _unexpected(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    if unreachable(error):  # a store reached outside its SqlDatabase's own translation
        log.warning("a store is unreachable on %s %s: %r", request.method, request.url.path, error)
        return _domain_error(request, StoreUnavailable("a database this needs is unreachable"))
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
    return problem(
        request,
        500,
        title_for(500),
        "Something went wrong on our side. Quote the request id when you report it.",
    )


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    DomainError: _domain_error,
    ValidationException: _validation_error,
    HTTPException: _http_error,
    Exception: _unexpected,
}
