"""Typed settings, read once from APP_* environment variables and handed down.

Nothing else reads os.environ. Every field is documented in the README's settings table.
`Settings` holds what the whole process shares; each module declares its own section (a
struct of its APP_* names, app/modules/spec.py) and its store URL is APP_<MODULE>_DB_URL, so
this file names no module: the values it does not know wait in `section_values` until the
section that declares them is read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal, TypeVar

import msgspec

from app.kernel.networks import address_set, address_toward

PREFIX = "APP_"
DB_URL = "_db_url"  # APP_<NAME>_DB_URL: the store of a module (or of the bus) called <name>

Seconds = Annotated[float, msgspec.Meta(ge=0)]
S = TypeVar("S", bound=msgspec.Struct)


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    env: Literal["development", "production", "test"] = "development"
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8000
    server: Literal["uvicorn", "granian"] = "uvicorn"  # the ASGI server `python -m app` runs
    data_dir: str = "./var"
    ephemeral: bool = False
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    # off; on: spans go to the provider the process set up (opentelemetry-instrument, tests);
    # console: printed; otlp: sent to otlp_endpoint (or OTEL_EXPORTER_OTLP_ENDPOINT).
    tracing: Literal["off", "on", "console", "otlp"] = "off"
    otlp_endpoint: str | None = None

    bus_url: str = "memory://"
    # Split mode: the URL a module process announces for the gateway to forward to
    # (default http://<host>:<port>; for a wildcard host, this host's address on the route
    # to the broker, so another host can reach it).
    advertise_url: str = ""

    secret_key: str | None = None
    access_token_minutes: Annotated[int, msgspec.Meta(ge=1)] = 60
    rate_limit_per_minute: Annotated[int, msgspec.Meta(ge=0)] = 6_000
    cors_origins: str = ""  # comma-separated origins allowed to call the API from a browser

    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 1_048_576
    idempotency_ttl_seconds: Annotated[float, msgspec.Meta(gt=0)] = 86_400.0

    # 8 attempts, 0.05 s doubling: ~6 s for what a handler waits on (a replica catching up,
    # over a broker where event types travel apart) before a dead letter.
    bus_max_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] = 8
    bus_retry_base_seconds: Seconds = 0.05
    bus_retry_max_seconds: Seconds = 5.0
    # How long a handler's "not yet" (its event's prerequisite, e.g. the user's contact, has
    # not arrived) is waited for before it counts as a failed attempt: the wait spends none
    # of the attempts above (docs/decisions/0032-broker-loss-and-not-yet.md); 0: no wait.
    bus_not_yet_seconds: Seconds = 60.0
    outbox_sweep_seconds: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    # Over NATS: how long the broker waits for a message's ack before delivering it again
    # (to another replica, when the process that took it died).
    bus_ack_wait_seconds: Annotated[float, msgspec.Meta(ge=1)] = 30.0
    # Over a JetStream cluster (APP_BUS_URL lists its servers, comma-separated): on how many
    # servers the stream and every consumer are kept (docs/decisions/0033); 1 for one server.
    nats_replicas: Annotated[int, msgspec.Meta(ge=1, le=5)] = 1
    # Split mode, while the broker is away: how long after the gateway last read or heard a
    # user's credentials it still checks their tokens against them; past that, 503 until
    # the broker is back, so a token revoked meanwhile stops working within this bound
    # (docs/decisions/0040-credentials-while-the-broker-is-away.md); 0: at once.
    credentials_away_seconds: Seconds = 60.0
    # Retention (docs/decisions/0035-retention.md). Delivered outbox rows, handled inbox ids
    # (rows, or a document's ids none was added to since) are deleted this long
    # after: an inbox id gone can no longer stop a redelivery, so keep this at least the
    # JetStream stream's max age (7 days, app/split/nats_transport.py): an id goes this long
    # after its event was handled, the message that long after it was published, earlier.
    retention_seconds: Annotated[float, msgspec.Meta(gt=0)] = 7 * 86_400.0
    # Dead letters, the events parked behind them and handler attempts are deleted this long
    # after they failed (each dead letter logged at WARNING); the lane behind a purged letter
    # is delivered as if the letter were discarded. Longer: an operator must see them first.
    dead_letter_retention_seconds: Annotated[float, msgspec.Meta(gt=0)] = 30 * 86_400.0
    purge_interval_seconds: Annotated[float, msgspec.Meta(gt=0)] = 3_600.0

    # The socket: X-Forwarded-For is believed only from these proxies (IPs, CIDRs; empty:
    # never); how long a request head may take and an idle connection may stay; who may
    # scrape /metrics (IPs, CIDRs; default loopback).
    trusted_proxies: str = ""
    header_timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 10.0
    keep_alive_seconds: Annotated[int, msgspec.Meta(ge=1, le=3600)] = 5
    metrics_allow: str = "127.0.0.0/8,::1"

    # The watch (a page streaming the bus, issue 14): how many observations a page that
    # connects is replayed, how many may wait for a slow page before the oldest is dropped,
    # how many flows (journeys) are kept in memory, and how often a quiet stream says so.
    watch_replay: Annotated[int, msgspec.Meta(ge=0, le=100_000)] = 500
    watch_subscriber_buffer: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 1_000
    watch_journeys: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 200
    watch_heartbeat_seconds: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 15.0
    # How long the watch keeps an observation in its replay and a journey (it holds user
    # ids, paths and event ids in memory): older ones are let go (docs/decisions/0035).
    # Shorter: a page shows less of an order's history; the stores are the record anyway.
    watch_keep_seconds: Annotated[float, msgspec.Meta(gt=0, le=30 * 86_400)] = 3_600.0

    # APP_* values the fields above do not know, by lowercase name without APP_: the
    # modules' sections and every store URL (<name>_db_url), read by `section` and `store_url`.
    section_values: dict[str, object] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        # A typo in an address list fails at startup, not as a silent hole later.
        address_set(self.trusted_proxies, "trusted_proxies")
        address_set(self.metrics_allow, "metrics_allow")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Settings from APP_* variables; keyword overrides (command-line flags) win."""
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {
            key[len(PREFIX) :].lower(): value
            for key, value in environ.items()
            if key.startswith(PREFIX)
        }
        values.update({key: value for key, value in overrides.items() if value is not None})
        own = set(cls.__struct_fields__) - {"section_values"}
        shared = {name: value for name, value in values.items() if name in own}
        shared["section_values"] = {n: v for n, v in values.items() if n not in own}
        return _convert(shared, cls)

    def section(self, kind: type[S]) -> S:
        """A module's own settings: the struct it declares, from the APP_* names it has."""
        names = set(kind.__struct_fields__)
        return _convert({n: v for n, v in self.section_values.items() if n in names}, kind)

    @property
    def cors_origin_list(self) -> list[str]:
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]

    def for_modules(self) -> Settings:
        """What modules are handed: no store URLs and no secret key; each store is opened
        for its module, and tokens are signed by the gateway."""
        values = {n: v for n, v in self.section_values.items() if not n.endswith(DB_URL)}
        return msgspec.structs.replace(self, secret_key=None, section_values=values)

    @property
    def reachable_url(self) -> str:
        """Where this process can be reached: APP_ADVERTISE_URL, or its own host and port."""
        if self.advertise_url:
            return self.advertise_url.rstrip("/")
        host = self.host
        if host in ("0.0.0.0", "::", ""):  # every interface: the one facing the broker
            broker = servers_of(self.bus_url)[0] if self.bus_url.startswith("nats://") else ""
            host = address_toward(broker) or "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def store_url(self, module: str) -> str:
        """The module's own store URL: set explicitly, in memory, or a file in the data dir."""
        explicit = self.section_values.get(f"{module}{DB_URL}")
        if explicit:
            return str(explicit)
        if self.ephemeral:
            return "sqlite:///:memory:"
        path = Path(self.data_dir).expanduser().resolve() / f"{module}.db"
        return f"sqlite:///{path}"


def servers_of(bus_url: str) -> list[str]:
    """`nats://a:4222,nats://b:4222` → both URLs: APP_BUS_URL names every server of a broker
    cluster (docs/decisions/0033-broker-cluster-and-restarts.md)."""
    return [server.strip() for server in bus_url.split(",") if server.strip()]


class SettingsError(ValueError):
    pass


def _convert(values: Mapping[str, object], kind: type[S]) -> S:
    try:
        return msgspec.convert(values, kind, strict=False)
    except msgspec.ValidationError as error:
        raise SettingsError(f"invalid setting: {_env_name(str(error))}") from error


def _env_name(message: str) -> str:
    """msgspec says `$.port`; the user set APP_PORT."""
    if "`$." in message:
        start = message.index("`$.") + 3
        end = message.index("`", start)
        field = message[start:end]
        return message.replace(f"`$.{field}`", f"APP_{field.upper()}")
    return message
