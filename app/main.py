"""The composition root: the ONLY place that knows every module."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from litestar import Litestar

from app.bus import Bus, DeliveryStore, RetryPolicy
from app.bus.transport import InProcessTransport, Transport
from app.gateway import build_gateway
from app.gateway.auth import JwtIssuer, jwt_auth
from app.gateway.secrets import resolve_secret_key
from app.kernel.module import Module
from app.runtime import Runtime
from app.settings import Settings


def default_modules() -> list[Module]:
    from app.modules.notifications.module import module as notifications
    from app.modules.orders.module import module as orders
    from app.modules.payments.module import module as payments
    from app.modules.users.module import module as users

    return [users, orders, payments, notifications]


def create_transport(settings: Settings) -> Transport:
    """The one place that decides how events travel: in this process, or over NATS."""
    if settings.bus_url in ("", "memory://"):
        return InProcessTransport()
    if settings.bus_url.startswith("nats://"):
        from app.bus.nats_transport import NatsTransport

        return NatsTransport(settings.bus_url)
    raise ValueError(
        f"APP_BUS_URL={settings.bus_url!r}: use memory:// (in process) or nats://HOST:PORT"
    )


# Drivers that log statement parameters at DEBUG would write password hashes to the log.
PARAMETER_LOGGERS = ("aiosqlite", "sqlalchemy.engine", "asyncpg")


def create_app(
    settings: Settings | None = None, modules: Sequence[Module] | None = None
) -> Litestar:
    settings = settings or Settings.from_env()
    for name in PARAMETER_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger(name).level))
    bus = Bus(
        create_transport(settings),
        retry=RetryPolicy(
            max_attempts=settings.bus_max_attempts,
            base_delay=settings.bus_retry_base_seconds,
            max_delay=settings.bus_retry_max_seconds,
        ),
        outbox_sweep_seconds=settings.outbox_sweep_seconds,
        store=DeliveryStore(settings.store_url("bus")),
    )
    auth = jwt_auth(settings, resolve_secret_key(settings))
    runtime = Runtime(
        settings, bus, default_modules() if modules is None else modules, JwtIssuer(auth)
    )
    return build_gateway(runtime, auth)
