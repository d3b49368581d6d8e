"""Domain errors. Modules raise these; the gateway maps them to HTTP in one place, and
titles every answer from its status alone (app/gateway/errors.py)."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error a module raises on purpose. `status` is the HTTP answer."""

    status: int = 400

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}


class InvalidInput(DomainError):
    """One or more fields with what is wrong with each, e.g. every missing field."""

    status = 400

    def __init__(self, field: str, message: str, *more: tuple[str, str]) -> None:
        self.errors = [(field, message), *more]
        super().__init__("; ".join(f"{name}: {says}" for name, says in self.errors))
        self.field = field
        self.message = message


class Unauthorized(DomainError):
    status = 401


class TooManyRequests(DomainError):
    status = 429

    def __init__(self, detail: str, *, retry_after_seconds: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after_seconds)})


class Forbidden(DomainError):
    status = 403


class NotFound(DomainError):
    status = 404


class Conflict(DomainError):
    status = 409


class IllegalTransition(Conflict):
    """A change an aggregate's status does not allow: the aggregate is in the way, so a 409."""


class TryAgain(Conflict):
    """A transient conflict: the same request will succeed later (Retry-After says when)."""

    def __init__(self, detail: str, *, retry_after_seconds: int = 1) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after_seconds)})


class Unavailable(DomainError):
    status = 503


class StoreUnavailable(Unavailable):
    """A module's database cannot be reached now (it restarts, its host is away): the same
    request will work once it is back. A handler's event waits for it without spending its
    attempts (docs/decisions/0033-broker-cluster-and-restarts.md)."""

    def __init__(self, detail: str, *, retry_after_seconds: int = 2) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after_seconds)})


class BoundaryViolation(Exception):
    """A module reached past its boundary. The message says where, which rule, and what instead."""
