"""HTTP for the users module: schemas and the controller."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, PathParameter

from app.kernel.idempotency import IdempotencyKeyHeader, fingerprint, replay_response
from app.kernel.identity import AccessToken, Caller
from app.kernel.pages import DEFAULT_LIMIT, Cursor, Limit, Page, page_of
from app.kernel.problems import AUTHENTICATED, PUBLIC, WITH_BODY, problems
from app.modules.users.service import UserService
from app.modules.users.store import REGISTRATION_SCOPE, Profile
from app.modules.users.user import User

Name = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=100,
        pattern=r"\S",
        extra={"error": "a name needs at least one character that is not a space"},
    ),
]
Email = Annotated[
    str,
    msgspec.Meta(
        min_length=3,
        max_length=254,
        # ASCII spaces spelled out: `\s` means different things to Python and to clients.
        # `(?!\n)$`: Python's `$` alone also matches before a final newline.
        pattern=r"^[^@ \t\n\r\f\v]+@[^@ \t\n\r\f\v]+\.[^@ \t\n\r\f\v]+(?!\n)$",
        description="An email address; unique, compared case-insensitively.",
        extra={"error": "not an email address"},
    ),
]
Password = Annotated[str, msgspec.Meta(min_length=8, max_length=128)]
UserId = Annotated[str, PathParameter(max_length=64, description="A user id.")]


class RegisterUser(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    email: Email
    password: Password


class UpdateUser(msgspec.Struct, forbid_unknown_fields=True):
    name: Name | None = None
    email: Email | None = None
    password: Password | None = None
    # Required with `email` or `password`: a token alone cannot take an account over.
    current_password: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None = None


class Credentials(msgspec.Struct, forbid_unknown_fields=True):
    email: Annotated[str, msgspec.Meta(min_length=1, max_length=254)]
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class UserOut(msgspec.Struct):
    id: str
    name: str
    email: str
    created_at: datetime

    @classmethod
    def of(cls, user: User | Profile) -> UserOut:
        """The user as clients see them: never the password hash, role or versions."""
        return msgspec.convert(user, cls, from_attributes=True)


Users = NamedDependency[UserService]
# The caller, authenticated by the gateway, is request.user (one dependency fewer per request).
Me = Request[Caller, Any, Any]


class UsersController(Controller):
    path = "/"

    @post(
        "/",
        operation_id="registerUser",
        responses=problems(*PUBLIC, *WITH_BODY, 409, 422),
        summary="Register a user (no token needed)",
        opt={"public": True},
        security=[{}],  # no token needed: an empty requirement allows anonymous calls
    )
    async def register(
        self,
        data: JSONBody[RegisterUser],
        users: Users,
        idempotency_key: IdempotencyKeyHeader = None,
    ) -> Response[UserOut]:
        if idempotency_key is None:
            user = await users.register(name=data.name, email=data.email, password=data.password)
            return Response(UserOut.of(user), status_code=201)
        write = users.idempotent_write(
            scope=REGISTRATION_SCOPE,  # registration has no caller yet: the route is the scope
            key=idempotency_key,
            fingerprint=fingerprint(REGISTRATION_SCOPE, msgspec.json.encode(data)),
            status=201,
            render=lambda user: msgspec.json.encode(UserOut.of(user)),
        )
        stored, replayed = await users.register_once(
            write, name=data.name, email=data.email, password=data.password
        )
        return replay_response(stored, replayed, UserOut)

    @get(
        "/",
        operation_id="listUsers",
        responses=problems(*AUTHENTICATED),
        summary="List users, a page at a time",
    )
    async def list_users(
        self,
        users: Users,
        request: Me,
        limit: Limit = DEFAULT_LIMIT,
        cursor: Cursor = None,
    ) -> Page[UserOut]:
        rows = await users.page(request.user, after=cursor, limit=limit + 1)
        return page_of([UserOut.of(row) for row in rows], limit)

    @get(
        "/{user_id:str}",
        operation_id="getUser",
        responses=problems(*AUTHENTICATED, 404),
        summary="Read a user",
    )
    async def get_user(self, user_id: UserId, users: Users, request: Me) -> UserOut:
        return UserOut.of(await users.profile(user_id, request.user))

    @patch(
        "/{user_id:str}",
        operation_id="updateUser",
        responses=problems(*AUTHENTICATED, *WITH_BODY, 403, 404, 409),
        summary="Change a user's name, email or password",
        description="A new email or password needs `current_password`, the account's "
        "password now (else 400; a wrong one is 403). Every token issued before a change "
        "of email or password is refused from then on: log in again.",
    )
    async def update_user(
        self, user_id: UserId, data: JSONBody[UpdateUser], users: Users, request: Me
    ) -> UserOut:
        user = await users.update(
            user_id,
            request.user,
            name=data.name,
            email=data.email,
            password=data.password,
            current_password=data.current_password,
            client=request.client.host if request.client else "unknown",
        )
        return UserOut.of(user)

    @delete(
        "/{user_id:str}",
        operation_id="deleteUser",
        responses=problems(*AUTHENTICATED, 404),
        summary="Delete a user everywhere",
        description="By the user themself or an admin. The users module erases the record and "
        "the user's key, so what events said of them (sealed with it) is unreadable in every "
        "outbox, inbox, dead letter and the broker's stream; every other module erases or "
        "pseudonymises what it holds of them when it hears UserDeleted. Orders, payments and "
        "their amounts stay, under the user's id only. The user's tokens are refused (401) "
        "from then on. Deleting a user who does not exist (or no longer does) is a 404.",
    )
    async def delete_user(self, user_id: UserId, users: Users, request: Me) -> None:
        await users.delete(user_id, request.user)


class TokenController(Controller):
    """Served under /api/auth: the users module owns credentials
    (docs/decisions/0003-route-ownership.md)."""

    path = "/"

    @post(
        "/token",
        operation_id="createToken",
        responses=problems(*PUBLIC, *WITH_BODY, 401),
        summary="Log in: a bearer token for an email and password",
        opt={"public": True},
        security=[{}],  # no token needed: an empty requirement allows anonymous calls
        status_code=200,
    )
    async def token(
        self, data: JSONBody[Credentials], users: Users, request: Request[Any, Any, Any]
    ) -> AccessToken:
        client = request.client.host if request.client else "unknown"
        return await users.log_in(email=data.email, password=data.password, client=client)
