"""Domain errors. Modules raise these; the gateway maps them to HTTP in one place."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error a module raises on purpose. `status` is the HTTP answer."""

    status: int = 400
    title: str = "Bad request"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}


class InvalidInput(DomainError):
    status = 400
    title = "Invalid request"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class Unauthorized(DomainError):
    status = 401
    title = "Unauthorized"


class TooManyRequests(DomainError):
    status = 429
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after_seconds: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after_seconds)})


class Forbidden(DomainError):
    status = 403
    title = "Forbidden"


class NotFound(DomainError):
    status = 404
    title = "Not found"


class Conflict(DomainError):
    status = 409
    title = "Conflict"


class TryAgain(Conflict):
    """A transient conflict: the same request will succeed later (Retry-After says when)."""

    title = "Not ready yet"

    def __init__(self, detail: str, *, retry_after_seconds: int = 1) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after_seconds)})


class Unavailable(DomainError):
    status = 503
    title = "Service unavailable"


class BoundaryViolation(Exception):
    """A module reached past its boundary. The message says where, which rule, and what instead."""
