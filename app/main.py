"""The composition root: the ONLY place that knows every module."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import msgspec
from litestar import Litestar

from app.bus import Bus, DeliveryStore, RetryPolicy, Watch
from app.bus.transport import InProcessTransport, Transport
from app.gateway.auth import JwtIssuer, jwt_auth
from app.gateway.gateway import build_gateway, public_entrance
from app.gateway.secrets import resolve_secret_key
from app.kernel.idempotency import fingerprint_key
from app.kernel.settings import Settings
from app.modules.spec import Module
from app.runtime import Runtime
from app.split.gateway import build_standalone_gateway
from app.split.module_process import behind_the_gateway


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
        from app.split.nats_transport import NatsTransport

        return NatsTransport(
            settings.bus_url,
            ack_wait_seconds=settings.bus_ack_wait_seconds,
            replicas=settings.nats_replicas,
            # The stream keeps a message no longer than the inboxes keep its id, so no
            # redelivery can outlive the id that makes it a no-op (docs/decisions/0035).
            max_age_seconds=settings.retention_seconds,
        )
    raise ValueError(
        f"APP_BUS_URL={settings.bus_url!r}: use memory:// (in process) or nats://HOST:PORT "
        "(a cluster's servers comma-separated)"
    )


# Drivers that log statement parameters at DEBUG would write password hashes to the log.
PARAMETER_LOGGERS = ("aiosqlite", "sqlalchemy.engine", "asyncpg")


def create_app(
    settings: Settings | None = None,
    modules: Sequence[Module] | None = None,
    *,
    only: Sequence[str] | None = None,
) -> Litestar:
    """The monolith (every module, one process); with `only`, a module process of the split
    mode: those modules alone, reached only through `python -m app gateway`."""
    settings = settings or Settings.from_env()
    for name in PARAMETER_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger(name).level))
    chosen = default_modules() if modules is None else list(modules)
    if only is not None:
        chosen = _pick(chosen, only)
        _require_broker(settings, "python -m app --modules")
    bus = Bus(
        create_transport(settings),
        retry=RetryPolicy(
            max_attempts=settings.bus_max_attempts,
            base_delay=settings.bus_retry_base_seconds,
            max_delay=settings.bus_retry_max_seconds,
            not_yet_seconds=settings.bus_not_yet_seconds,
        ),
        outbox_sweep_seconds=settings.outbox_sweep_seconds,
        store=DeliveryStore(settings.store_url("bus")),
        watch=watch_for(settings, ",".join(only) if only else "monolith"),
    )
    secret_key = resolve_secret_key(settings)
    auth = jwt_auth(settings, secret_key)
    runtime = Runtime(settings, bus, chosen, JwtIssuer(auth), fingerprint_key(secret_key))
    if only is not None:
        return build_gateway(runtime, behind_the_gateway(runtime, secret_key))
    return build_gateway(runtime, public_entrance(runtime, auth))


def create_gateway_app(
    settings: Settings | None = None, modules: Sequence[Module] | None = None
) -> Litestar:
    """`python -m app gateway`: the gateway alone, forwarding to module processes."""
    settings = settings or Settings.from_env()
    _require_broker(settings, "python -m app gateway")
    secret_key = resolve_secret_key(settings)
    chosen = default_modules() if modules is None else list(modules)
    # The monolith of the same modules, never started: its /schema is the whole system's.
    # Untraced: the first app to set tracing up names the process in every span.
    whole = create_app(
        msgspec.structs.replace(settings, bus_url="memory://", ephemeral=True, tracing="off"),
        chosen,
    )
    return build_standalone_gateway(
        settings, chosen, jwt_auth(settings, secret_key), secret_key, system=whole.openapi_schema
    )


def watch_for(settings: Settings, process: str) -> Watch:
    """What this process sees of the bus, kept for the page (APP_WATCH_*)."""
    return Watch(
        process=process,
        replay=settings.watch_replay,
        subscriber_buffer=settings.watch_subscriber_buffer,
        journeys=settings.watch_journeys,
        keep_seconds=settings.watch_keep_seconds,
    )


def _pick(modules: Sequence[Module], names: Sequence[str]) -> list[Module]:
    known = {module.name: module for module in modules}
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise ValueError(
            f"--modules {','.join(names)!s}: name one or more of {', '.join(known)}"
            + (f" ({', '.join(unknown)} is not a module)" if unknown else "")
        )
    return [known[name] for name in dict.fromkeys(names)]


def _require_broker(settings: Settings, what: str) -> None:
    if not settings.bus_url.startswith("nats://"):
        raise ValueError(
            f"{what} runs in split mode, where events cross processes: set "
            "APP_BUS_URL=nats://HOST:PORT (or run `python -m app cluster`)"
        )
    if settings.ephemeral and not settings.secret_key:
        raise ValueError(
            f"{what} with --ephemeral needs APP_SECRET_KEY: every process of the split must "
            "sign and check tokens with the same key (`python -m app cluster` sets one)"
        )
