"""The error shape in the OpenAPI document: every route names the problems it can answer.

The gateway produces the bodies (app/gateway/errors.py); this only describes them, so the
spec and the answers agree (schemathesis checks that they do).
"""

from __future__ import annotations

import msgspec
from litestar.openapi import ResponseSpec

PROBLEM_JSON = "application/problem+json"


class FieldError(msgspec.Struct, frozen=True):
    field: str
    message: str


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    """RFC 9457 problem details, with the request id."""

    type: str
    title: str
    status: int
    detail: str
    instance: str
    request_id: str
    errors: list[FieldError] | msgspec.UnsetType = msgspec.UNSET


WHEN = {
    400: "Invalid input: malformed JSON, wrong types, missing or unknown fields, bad values",
    401: "No bearer token, or one that is invalid or expired",
    403: "Not allowed for this caller",
    404: "Not found (or someone else's)",
    409: "A conflict with the current state; with Retry-After, a transient one to retry",
    413: "The request body is over the size limit",
    415: "The request body is not declared JSON (Content-Type: application/json)",
    422: "An Idempotency-Key reused with a different request body",
    429: "Too many requests; see Retry-After and the RateLimit-* headers",
    503: "A part of the system does not answer",
}

PUBLIC = (400, 429)
AUTHENTICATED = (400, 401, 429)
WITH_BODY = (413, 415)


def problems(*statuses: int) -> dict[int, ResponseSpec]:
    """`responses=` for a route: the problem+json answers it can give."""
    return {
        status: ResponseSpec(
            data_container=Problem,
            description=WHEN[status],
            media_type=PROBLEM_JSON,
            generate_examples=False,
        )
        for status in sorted(set(statuses))
    }
