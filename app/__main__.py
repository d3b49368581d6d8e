"""`python -m app`: serve the whole system (default), print its topology, or run a command a
module declares.

Split mode (over NATS): `python -m app --modules <names>` serves only the named modules;
`python -m app gateway` serves the gateway alone; `python -m app cluster` runs both kinds
as supervised child processes.

Flags override the matching APP_* environment variables; every other setting is read from
the environment (see the README's settings table).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.kernel.settings import Settings, SettingsError

if TYPE_CHECKING:
    from litestar import Litestar
    from litestar.types import ASGIApp, Receive, Scope, Send

    from app.modules.spec import Module, Store


BUILT_IN = ["serve", "gateway", "cluster", "topology", "contracts"]


def build_parser(modules: Sequence[Module]) -> argparse.ArgumentParser:
    """The built-in commands and every command the modules declare, with their options."""
    names = [module.name for module in modules]
    example = names[len(names) // 2]  # for the examples in the help
    commands = [command for module in modules for command in module.commands]
    parser = argparse.ArgumentParser(
        prog="python -m app",
        description=(
            f"Seams: a microservice architecture ({', '.join(names)}) in one Litestar "
            "process behind one gateway. With no command it serves."
        ),
        epilog="Every other setting is an APP_* environment variable; see README.md.",
    )
    parser.add_argument(
        "command",
        nargs="?",
        default="serve",
        choices=[*BUILT_IN, *(command.name for command in commands)],
        help="serve (default; with --modules, only those modules); gateway: the gateway "
        "alone, in front of module processes; cluster: the gateway and every module as "
        "separate processes; topology: print the topology derived from the code; contracts: "
        "print the AsyncAPI document of the events (with --catalog, write the catalog)"
        + "".join(f"; {command.name}: {command.help}" for command in commands),
    )
    parser.add_argument(
        "--modules",
        help=f"serve: only these modules (comma-separated, e.g. {example} or "
        f"{','.join(names[len(names) // 2 - 1 : len(names) // 2 + 1])}), as one process of "
        "the split mode; needs APP_BUS_URL=nats://…",
    )
    parser.add_argument(
        "--format",
        choices=["mermaid", "json"],
        default="mermaid",
        help="topology: a Mermaid flowchart (default) or JSON",
    )
    parser.add_argument(
        "--catalog",
        action="store_true",
        help="contracts: write docs/contracts/catalog.json (run from the repository's root)",
    )
    parser.add_argument(
        "--replicas",
        action="append",
        default=[],
        metavar="MODULE=N",
        help=f"cluster: run N processes of a module (repeatable), e.g. --replicas {example}=3",
    )
    parser.add_argument(
        "--nats-url",
        help="cluster: the broker to use (default: APP_BUS_URL when it is nats://, else a "
        "private nats-server -js started with the cluster, data under the data dir)",
    )
    parser.add_argument(
        "--brokers",
        type=int,
        default=1,
        help="cluster: how many private nats-servers, clustered, keep the events (1, 3 or 5; "
        "with 3 or 5 the stream and consumers are replicated on each, and the cluster goes "
        "on when one (or two) of them dies)",
    )
    parser.add_argument(
        "--exit-on-crash",
        action="store_true",
        help="cluster: when a process exits, stop them all and exit non-zero (for CI) "
        "instead of restarting it",
    )
    for command in commands:
        for option in command.options:
            parser.add_argument(
                option.flag,
                help=f"{command.name}: {option.help}",
                **({"action": "store_true"} if option.switch else {"default": option.default}),
            )
    parser.add_argument("--host", help="interface to listen on (APP_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (APP_PORT, default 8000)")
    parser.add_argument(
        "--data-dir",
        help="where the embedded stores keep their files, one per module "
        "(APP_DATA_DIR, default ./var)",
    )
    parser.add_argument(
        "--ephemeral",
        action="store_true",
        default=None,
        help="keep every store in memory; nothing is written to disk (APP_EPHEMERAL); "
        "cluster: every process keeps its files in a temporary data dir, removed on exit",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from app.main import default_modules

    modules = default_modules()
    arguments = build_parser(modules).parse_args(argv)
    try:
        settings = Settings.from_env(
            host=arguments.host,
            port=arguments.port,
            data_dir=arguments.data_dir,
            ephemeral=arguments.ephemeral,
        )
        for module in modules:  # a bad value in a module's section fails here, at once
            if module.settings is not None:
                settings.section(module.settings)
    except SettingsError as error:
        print(f"python -m app: {error}", file=sys.stderr)
        return 2
    if arguments.command == "topology":
        return print_topology(settings, arguments.format)
    if arguments.command == "contracts":
        return contracts(modules, catalog=arguments.catalog)
    if arguments.command == "gateway":
        return serve(settings, role="gateway")
    if arguments.command == "cluster":
        return cluster(
            settings,
            modules,
            arguments.replicas,
            arguments.nats_url,
            exit_on_crash=arguments.exit_on_crash,
            brokers=arguments.brokers,
        )
    if arguments.command != "serve":
        return run_module_command(settings, modules, arguments.command, vars(arguments))
    only = [name.strip() for name in arguments.modules.split(",")] if arguments.modules else None
    return serve(settings, only=only)


def run_module_command(
    settings: Settings, modules: Sequence[Module], name: str, arguments: Mapping[str, Any]
) -> int:
    """A command a module declared, run while this process holds the data dir alone."""
    [command] = [c for module in modules for c in module.commands if c.name == name]
    options = {option.dest: arguments[option.dest] for option in command.options}
    prog = f"python -m app {name}"
    return run_holding_data_dir(
        settings,
        prog,
        lambda: command.run(options, ModuleCommandRun(settings, name, prog)),
        refused="stop the server first",
        prog=prog,
    )


class ModuleCommandRun:
    """What a module's command is handed (app/modules/spec.py CommandRun)."""

    def __init__(self, settings: Settings, name: str, prog: str) -> None:
        self.settings = settings
        self._name = name
        self._prog = prog

    def refuse(self, reason: str) -> int:
        print(f"{self._prog}: {reason}", file=sys.stderr)
        return 2

    def operate(self, **arguments: Any) -> tuple[Any, Store]:
        from app.main import create_app

        runtime = create_app(self.settings).state.runtime
        owner = runtime.command_owner(self._name)

        async def run() -> Any:
            await runtime.start()
            try:
                result = await owner.assembly.commands[self._name](**arguments)
                await runtime.bus.wait_quiet(10)  # its events reach their consumers now
                return result
            finally:
                await runtime.stop()

        return asyncio.run(run()), owner.store


def cluster(
    settings: Settings,
    modules: Sequence[Module],
    replicas: list[str],
    nats_url: str | None,
    *,
    exit_on_crash: bool = False,
    brokers: int = 1,
) -> int:
    """The split on this machine, supervised; with --ephemeral in a temporary data dir that
    is gone when the cluster exits; with --brokers 3, over a JetStream cluster."""
    from app.gateway.secrets import MissingSecretKey, resolve_secret_key
    from app.kernel.data_dir import prepare_data_dir
    from app.split.cluster import ClusterError, parse_replicas, plan, run, throwaway_data_dir

    names = [module.name for module in modules]
    if nats_url is None and settings.bus_url.startswith("nats://"):
        nats_url = settings.bus_url
    try:
        counts = parse_replicas(replicas, names)
        with throwaway_data_dir(settings) as settings:
            # 0700 before the key, the broker's data and logs go in
            prepare_data_dir(data_dir_of(settings))
            # One key for every process: the gateway's tokens and proofs must check everywhere.
            secret_key = resolve_secret_key(settings)
            the_plan = plan(
                settings,
                names,
                replicas=counts,
                nats_url=nats_url,
                secret_key=secret_key,
                brokers=brokers,
            )
            return run(the_plan, exit_on_crash=exit_on_crash)
    except (ClusterError, MissingSecretKey) as error:
        print(f"python -m app cluster: {error}", file=sys.stderr)
        return 2


def print_topology(settings: Settings, output: str) -> int:
    import msgspec

    from app.gateway.topology import to_mermaid, topology_of
    from app.main import create_app

    app = create_app(settings)  # built, not started: nothing is opened or written
    topology = topology_of(app, app.state.runtime)
    if output == "json":
        print(msgspec.json.format(msgspec.json.encode(topology)).decode())
    else:
        print(to_mermaid(topology), end="")
    return 0


def contracts(modules: Sequence[Module], *, catalog: bool) -> int:
    """Print the AsyncAPI document, or write the event catalog the snapshot test compares
    the code with (docs/decisions/0026-event-versions.md)."""
    import msgspec

    from app.gateway.asyncapi import CATALOG_PATH, asyncapi_document, catalog_json

    if not catalog:
        print(msgspec.json.format(msgspec.json.encode(asyncapi_document(modules))).decode())
        return 0
    target = Path(CATALOG_PATH)
    if not target.parent.parent.is_dir():
        print(
            f"python -m app contracts: no {target.parent.parent}/ here: run it from the "
            "repository's root",
            file=sys.stderr,
        )
        return 2
    target.parent.mkdir(exist_ok=True)
    target.write_bytes(catalog_json(modules))
    print(f"wrote {target}")
    return 0


def data_dir_of(settings: Settings) -> Path:
    return Path(settings.data_dir).expanduser().resolve()


def run_holding_data_dir(
    settings: Settings,
    command: str,
    run: Callable[[], int],
    *,
    refused: str,
    shared: bool = False,
    prog: str = "python -m app",
) -> int:
    """`run()` while this process holds the data dir's lock (shared by module processes, else
    exclusive), released when it returns; 2, naming the holder and what to do (`refused`), if
    another process holds it. --ephemeral writes nothing to disk: nothing to hold."""
    from app.kernel.data_dir import DataDirInUse, DataDirLock

    if settings.ephemeral:
        return run()
    lock = DataDirLock(data_dir_of(settings), command, shared=shared)
    try:
        lock.acquire()
    except DataDirInUse as error:
        print(f"{prog}: {error}; {refused}", file=sys.stderr)
        return 2
    try:
        return run()
    finally:
        lock.release()


def serve(settings: Settings, *, role: str = "monolith", only: list[str] | None = None) -> int:
    from app.logs import configure_logging

    configure_logging(settings)
    if role == "gateway":  # it keeps no store: the data dir belongs to its module processes
        return serve_app(settings, role=role)
    command = f"python -m app --modules {','.join(only)}" if only else "python -m app"
    return run_holding_data_dir(
        settings,
        command,
        lambda: serve_app(settings, role=role, only=only),
        refused="stop it first or use another --data-dir",
        shared=only is not None,  # replicas of the split share a data dir
    )


def serve_app(settings: Settings, *, role: str, only: list[str] | None = None) -> int:
    from app.main import create_app, create_gateway_app

    try:
        app = create_gateway_app(settings) if role == "gateway" else create_app(settings, only=only)
    except ValueError as error:
        print(f"python -m app: {error}", file=sys.stderr)
        return 2
    where = "memory (--ephemeral)" if settings.ephemeral else settings.data_dir
    what = "the gateway alone" if role == "gateway" else ", ".join(only or ["every module"])
    logging.getLogger("app").info(
        "serving %s on http://%s:%d with %s (data: %s); API docs at /schema",
        what,
        settings.host,
        settings.port,
        settings.server,
        where,
    )
    # One worker by design: the bus, embedded stores and limits live in it
    # (docs/decisions/0002-one-worker.md).
    if settings.server == "granian":
        return run_granian(app, settings)
    return run_uvicorn(app, settings)


GRACEFUL_SECONDS = 10  # how long a stop waits for the requests in flight


def run_uvicorn(app: Litestar, settings: Settings) -> int:
    import uvicorn

    from app.transport import head_deadline_protocol, trusted_proxy_headers

    class StreamsEndFirst(uvicorn.Server):
        """On a stop, the app's open event streams end before uvicorn waits for the requests
        in flight: a stream never finishes by itself, so a page left open would otherwise
        hold the stop for the whole grace period and then be cancelled."""

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            end_streams(app)
            await super().shutdown(sockets)

    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal to the handler it
    # found: a no-op one lets a clean stop exit with status 0 instead of dying of SIGTERM.
    signal.signal(signal.SIGTERM, lambda *_: None)
    config = uvicorn.Config(
        # X-Forwarded-For names the client only when a trusted proxy sent it: uvicorn's own
        # proxy_headers (on by default) would believe any loopback client.
        trusted_proxy_headers(app, settings),
        proxy_headers=False,
        host=settings.host,
        port=settings.port,
        workers=1,
        log_level=settings.log_level.lower(),
        log_config=None,  # keep the handlers configure_logging installed
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
        access_log=False,  # app.access logs each request with its request id instead
        http=head_deadline_protocol(settings.header_timeout_seconds),
        timeout_keep_alive=settings.keep_alive_seconds,
    )
    server = StreamsEndFirst(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    return 0 if server.started else 3  # 3: uvicorn's own exit status for a failed startup


def end_streams(app: Litestar) -> None:
    """End every open Server-Sent Events stream of the app (the watch's), at a stop."""
    watch = getattr(app.state, "watch", None)
    if watch is not None:
        watch.end_streams()


class InFlight:
    """The app, counting the requests it is serving, so that a stop can wait for them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.count += 1
        self._idle.clear()
        try:
            await self.app(scope, receive, send)
        finally:
            self.count -= 1
            if self.count == 0:
                self._idle.set()

    async def finished(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True


def run_granian(app: Litestar, settings: Settings) -> int:
    """Granian's embedded server, on this process's own event loop: one process, as with
    uvicorn.run (granian's command line serves from a child process, which goes on serving
    when its parent is SIGKILLed). The lifespan runs here, around the server, and a stop
    (SIGTERM, SIGINT) lets the requests in flight finish before the stores close."""
    import uvloop
    from granian.constants import Interfaces
    from granian.http import HTTP1Settings
    from granian.log import LogLevels
    from granian.server.embed import Server

    from app.logs import configure_logging
    from app.transport import trusted_proxy_headers

    log = logging.getLogger("app")
    requests = InFlight(trusted_proxy_headers(app, settings))
    server = Server(
        requests,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGINL,  # no lifespan from granian: run() runs the app's
        log_level=LogLevels(settings.log_level.lower()),
        log_access=False,  # app.access logs each request with its request id instead
        backlog=1024,
        # A request head must be whole in time once begun (hyper's timer; it also closes a
        # kept-alive connection left idle: granian has no HTTP/1 keep-alive timeout).
        http1_settings=HTTP1Settings(
            header_read_timeout=round(settings.header_timeout_seconds * 1000)
        ),
    )
    configure_logging(settings)  # granian configured logging its way: ours again
    for name in ("_granian", "granian.access"):  # its lines in our shape, like uvicorn's
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    started = False

    async def run() -> None:
        nonlocal started
        loop = asyncio.get_running_loop()

        def stop() -> None:
            end_streams(app)
            server.stop()  # type: ignore[no-untyped-call]

        for stop_signal in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(stop_signal, stop)
        async with app.lifespan():
            started = True
            await server.serve()  # until a stop signal; granian stops accepting at once
            if not await requests.finished(GRACEFUL_SECONDS):
                log.warning("stopping with %d requests still in flight", requests.count)

    try:
        uvloop.run(run())
    except Exception:
        log.exception("the app failed to start" if not started else "the server failed")
        return 1 if started else 3  # 3: what uvicorn exits with when startup fails
    return 0


if __name__ == "__main__":
    sys.exit(main())
