"""HTTP for the users module: schemas and the controller."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from litestar import Controller, Response, get, patch, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, PathParameter

from app.kernel.idempotency import IdempotencyKeyHeader, fingerprint, replay_response
from app.kernel.pages import DEFAULT_LIMIT, Cursor, Limit, Page, page_of
from app.modules.users.service import UserService
from app.modules.users.store import UserRow

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"\S")]
Email = Annotated[
    str,
    msgspec.Meta(
        min_length=3,
        max_length=254,
        pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$",
        description="An email address; unique, compared case-insensitively.",
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


class UserOut(msgspec.Struct):
    id: str
    name: str
    email: str
    created_at: datetime


def _out(user: UserRow) -> UserOut:
    return UserOut(id=user.id, name=user.name, email=user.email, created_at=user.created_at)


Users = NamedDependency[UserService]


class UsersController(Controller):
    path = "/"

    @post("/", operation_id="registerUser", summary="Register a user")
    async def register(
        self,
        data: JSONBody[RegisterUser],
        users: Users,
        idempotency_key: IdempotencyKeyHeader = None,
    ) -> Response[UserOut]:
        if idempotency_key is None:
            user = await users.register(name=data.name, email=data.email, password=data.password)
            return Response(_out(user), status_code=201)
        write = users.idempotent_write(
            scope="POST /api/users",  # registration has no caller yet: the route is the scope
            key=idempotency_key,
            fingerprint=fingerprint("POST /api/users", msgspec.json.encode(data)),
            status=201,
            render=lambda user: msgspec.json.encode(_out(user)),
        )
        stored, replayed = await users.register_once(
            write, name=data.name, email=data.email, password=data.password
        )
        return replay_response(stored, replayed, UserOut)

    @get("/", operation_id="listUsers", summary="List users, a page at a time")
    async def list_users(
        self,
        users: Users,
        limit: Limit = DEFAULT_LIMIT,
        cursor: Cursor = None,
    ) -> Page[UserOut]:
        rows = await users.page(after=cursor, limit=limit + 1)
        return page_of([_out(row) for row in rows], limit)

    @get("/{user_id:str}", operation_id="getUser", summary="Read a user")
    async def get_user(self, user_id: UserId, users: Users) -> UserOut:
        return _out(await users.get(user_id))

    @patch(
        "/{user_id:str}",
        operation_id="updateUser",
        summary="Change a user's name, email or password",
    )
    async def update_user(
        self, user_id: UserId, data: JSONBody[UpdateUser], users: Users
    ) -> UserOut:
        user = await users.update(user_id, name=data.name, email=data.email, password=data.password)
        return _out(user)
