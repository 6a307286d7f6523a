"""The ``gater`` command (typer; ADR 0018).

    gater up [--port N] [--data-dir DIR] [--nats URL | --embedded] [--sync always] [--secure]
             [--processes N] [--connect-timeout S]
                                                 everything on an embedded nats-server (or a given NATS),
                                                 one child process per service (supervise.py)
    gater serve SERVICE... [--nats URL] [--ready-file F] [--instances N] [--connect-timeout S]
                                                 chosen services against a given NATS (N processes)
    gater bench ARGS...                          the benchmark (bench/__main__.py; also ``gater-bench``)
    gater req|sub|streams|read|subscriptions|links|scavenge|health ...
                                                 operator commands on the public API (ops.py)
    gater --version

Which server ``gater up`` uses, in this order: ``--nats URL``; the ``NATS_URL`` environment
variable (said so on the first line; ``--embedded`` ignores it); else its own nats-server on
``--port``, after taking ``<data-dir>/.lock`` and checking the port. Every failure to start is
one line on stderr and an exit code: 2 usage, 3 NATS unreachable within ``--connect-timeout``,
4 the data folder or the port is in use, 1 anything else (the embedded server did not start).
Ctrl-C: the first drains (bounded), a second exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import sys
from collections.abc import Callable, Coroutine
from enum import StrEnum
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from pydantic import SecretStr
from rich.console import Console

from esdb_gater.cli import ops
from esdb_gater.cli.supervise import ChildSpec, settings_env, supervise
from esdb_gater.services import SERVICES, run_services, start_services
from esdb_gater.shared.core.settings import Settings
from esdb_gater.shared.runtime.runner import (
    DEFAULT_CONNECT_TIMEOUT_S,
    EXIT_INTERRUPTED,
    EXIT_UNREACHABLE,
    ConnectError,
    Running,
    connect,
    force_exit,
    run,
    run_until_signal,
)
from esdb_gater.shared.security import accounts
from esdb_gater.shared.tooling.natsserver import (
    DataDirInUseError,
    NatsServer,
    NatsServerError,
    lock_data_dir,
    port_in_use,
)

__all__ = ["EXIT_IN_USE", "EXIT_SERVER_FAILED", "EXIT_UNREACHABLE", "app", "main"]

DIST = "esdb-gater"
DEFAULT_PORT = 4222
NATS_CLI_DEFAULT_URL = "nats://127.0.0.1:4222"  # where `nats` and `gater req` go without --server
EXIT_SERVER_FAILED = 1
EXIT_USAGE = 2
EXIT_IN_USE = 4  # the data folder is locked by another gater up, or the port is taken

app = typer.Typer(
    name="gater",
    help="esdb-gater: an event-store gateway on NATS JetStream.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_out = Console(highlight=False, soft_wrap=True)
_err = Console(stderr=True, highlight=False, soft_wrap=True)


class Sync(StrEnum):
    default = "default"
    always = "always"


def _version() -> str:
    try:
        return dist_version(DIST)
    except PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


def _print_version(value: bool) -> None:
    if value:
        _out.print(f"gater {_version()}", markup=False)
        raise typer.Exit()


Verbose = Annotated[
    int,
    typer.Option(
        "--verbose",
        "-v",
        count=True,
        show_default=False,
        help="more log output (gater up: -v INFO, -vv DEBUG; gater serve: -v DEBUG)",
    ),
]


@app.callback()
def _root(
    ctx: typer.Context,
    verbose: Verbose = 0,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="print the version and exit"),
    ] = False,
) -> None:
    """esdb-gater: an event-store gateway on NATS JetStream."""
    ctx.obj = verbose


def _logging(ctx: typer.Context, base: int, more: int, exact: str | None = None) -> str:
    """``base`` is the level without -v; each -v (``gater -v up`` or ``gater up -v``) is one step
    (WARNING → INFO → DEBUG)."""
    verbose = (ctx.obj if isinstance(ctx.obj, int) else 0) + more
    level = logging.getLevelNamesMapping()[exact] if exact else max(logging.DEBUG, base - 10 * verbose)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("nats").setLevel(logging.WARNING if level > logging.DEBUG else logging.DEBUG)
    return logging.getLevelName(level)


def _fail(command: str, message: str, code: int) -> typer.Exit:
    """One line on stderr, then exit with ``code``: never a traceback."""
    _err.print(f"gater {command}: {message}", style="red", markup=False)
    return typer.Exit(code)


def _say(line: str) -> None:
    _out.print(line, markup=False)


def _server_flag(url: str) -> str:
    """``--server URL `` when a client without one would go elsewhere (NATS_URL, or the default)."""
    elsewhere = [os.environ.get(var, url) for var in ("NATS_URL", "ESDB_GATER_NATS_URL")]
    if url == NATS_CLI_DEFAULT_URL and all(u == url for u in elsewhere):
        return ""
    return f"--server {url} "


# --- options shared by up and serve ------------------------------------------------------------

ConnectTimeout = Annotated[
    float,
    typer.Option(
        "--connect-timeout",
        min=0.1,
        metavar="SECONDS",
        help="give up (exit 3) when NATS does not answer within this time; once connected, a lost "
        "connection is retried for ever",
    ),
]


# --- gater up ----------------------------------------------------------------------------------


@app.command()
def up(
    ctx: typer.Context,
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="client port of the embedded nats-server (0: any free port)")
    ] = DEFAULT_PORT,
    data_dir: Annotated[
        Path,
        typer.Option(
            envvar="ESDB_GATER_DATA_DIR",
            show_envvar=True,
            file_okay=False,
            help="folder of the embedded server: JetStream data, its config, the lock of this gater up, "
            "and (--secure) the tenants' passwords",
        ),
    ] = Path(".gater-data"),
    nats: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="use this NATS server (URLs comma-separated) instead of starting one; without it the "
            "NATS_URL environment variable is used when set",
            show_default=False,
        ),
    ] = None,
    embedded: Annotated[
        bool, typer.Option("--embedded", help="start the embedded nats-server even when NATS_URL is set")
    ] = False,
    sync: Annotated[
        Sync,
        typer.Option(
            help="JetStream sync_interval of the embedded server: default (acknowledge before fsync; fsync "
            "every 2 min) or always (fsync every write before acknowledging it; slower, survives power loss)",
        ),
    ] = Sync.default,
    secure: Annotated[
        bool,
        typer.Option(
            "--secure",
            help="tenant accounts (nats/accounts.conf, docs/adr/0014): each service connects as its own "
            "user, tenants demo/orders/billing reach only their store; prints the demo tenant's credentials",
        ),
    ] = False,
    processes: Annotated[
        int | None,
        typer.Option(
            min=1,
            metavar="N",
            help="run the services in N processes (1: all in this process, for tiny machines; "
            "default: one process per service, as a deployment runs them)",
            show_default=False,
        ),
    ] = None,
    connect_timeout: ConnectTimeout = DEFAULT_CONNECT_TIMEOUT_S,
    verbose: Verbose = 0,
) -> None:
    """Run every service, on an embedded nats-server with JetStream (or on --nats / NATS_URL)."""
    level = _logging(ctx, logging.WARNING, verbose)
    groups = _groups(processes)
    if secure and len(groups) > 1 and any(len(g) > 1 for g in groups):
        raise _fail(
            "up", f"--secure runs each service as its own user: use --processes 1 or {len(SERVICES)}", EXIT_USAGE
        )
    if nats and embedded:
        raise _fail("up", "--nats and --embedded exclude each other", EXIT_USAGE)
    url, source = None, ""
    if nats:
        url, source = nats, "--nats"
    elif not embedded and os.environ.get("NATS_URL"):
        url, source = os.environ["NATS_URL"], "NATS_URL"
    ignore = "; --embedded ignores it" if source == "NATS_URL" else ""
    if url and secure:
        raise _fail(
            "up",
            f"--secure runs its own server with the tenant accounts, but {source} is set{ignore}; for a server "
            "of yours, include nats/accounts.conf in its config and run `gater serve` per service (compose.yaml)",
            EXIT_USAGE,
        )
    if url and sync is Sync.always:
        raise _fail(
            "up",
            f"--sync always sets the embedded server's sync_interval, but {source} is set{ignore}; for that "
            "server set 'sync_interval: always' in its jetstream block",
            EXIT_USAGE,
        )
    if url:
        why = "NATS_URL is set; --embedded starts gater's own server instead" if source == "NATS_URL" else "--nats"
        _say(f"NATS {url} (not started here: {why})")
        settings = _settings(url, auto_create_stores=True)
        if len(groups) > 1:
            _run("up", _reachable(url, connect_timeout))
            _run_children(
                "up",
                _specs(groups, {"auto_create_stores": True}),
                url,
                connect_timeout,
                level,
                _ready_banner(url, settings),
            )
            return
        _run(
            "up",
            run_services(
                list(SERVICES), settings, on_ready=_ready_banner(url, settings), connect_timeout=connect_timeout
            ),
        )
        return
    why = (
        "--embedded" + (", NATS_URL ignored" if os.environ.get("NATS_URL") else "")
        if embedded
        else "no --nats, no NATS_URL"
    )
    try:
        _up_embedded(data_dir.resolve(), port, sync is Sync.always, secure, connect_timeout, why, groups, level)
    except KeyboardInterrupt:
        # Ctrl-C before the services' signal handlers were in place (the server was starting);
        # the finally blocks of _up_embedded have stopped what had started
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _settings(url: str, **overrides: object) -> Settings:
    return Settings(nats_url=url, **overrides)  # type: ignore[arg-type]


def _ready_banner(url: str, settings: Settings) -> Callable[[], None]:
    subject = f"{settings.subject_prefix}.api.demo.stream.version"
    server = _server_flag(url)

    def ready() -> None:
        _say(f"esdb-gater is up: {len(SERVICES)} services on {url} ({', '.join(SERVICES)})")
        _say(f'  try: gater req {server}{subject} \'{{"stream_id":"x"}}\'')
        _say(f'   or: nats {server}req {subject} \'{{"stream_id":"x"}}\'')
        _say("  Ctrl-C stops everything")

    return ready


def _secure_banner(url: str, settings: Settings, data_dir: Path, demo: str) -> Callable[[], None]:
    subject = f"{settings.subject_prefix}.api.demo.stream.version"

    def ready() -> None:
        _say(f"esdb-gater is up (secure): {len(SERVICES)} services on {url}, each as its own user")
        _say(f"  tenant demo (store demo): user demo, password {demo}")
        _say(f'  try: nats --server {url} --user demo --password {demo} req {subject} \'{{"stream_id":"x"}}\'')
        _say(f'   or: gater req --server {url} --user demo --password {demo} {subject} \'{{"stream_id":"x"}}\'')
        others = ", ".join(t.user for t in accounts.DEFAULT_TENANTS if t.user != "demo")
        _say(f"  other tenants: {others}; passwords in {data_dir / accounts.PASSWORDS_FILE}")
        _say("  Ctrl-C stops everything")

    return ready


HMAC_SECRET_FILE = "hmac-secret"
_HMAC_SECRET_ENV = ("ESDB_GATER_CHANNELS__HMAC_SECRET", "ESDB_GATER_CHANNELS__HMAC_SECRET_FILE", "ESDB_GATER_SECRET")


def _local_hmac_secret(data_dir: Path) -> None:
    """Without a configured HMAC secret every service process would make up its own, and signed
    channel messages would verify only by chance: ``gater up`` keeps one in its data folder
    (mode 0600, made on first start, reused after) and points the services at it."""
    if any(os.environ.get(v) for v in _HMAC_SECRET_ENV):
        return
    path = data_dir / HMAC_SECRET_FILE
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
    os.environ["ESDB_GATER_CHANNELS__HMAC_SECRET_FILE"] = str(path)
    _say(f"HMAC secret for signed channel messages: {path} (set ESDB_GATER_CHANNELS__HMAC_SECRET to choose one)")


def _up_embedded(
    data_dir: Path,
    port: int,
    sync_always: bool,
    secure: bool,
    connect_timeout: float,
    why: str,
    groups: list[list[str]],
    level: str,
) -> None:
    """Lock the data folder, check the port, start nats-server, run the services, stop it all."""
    try:
        lock = lock_data_dir(data_dir)
    except DataDirInUseError as exc:
        raise _fail("up", str(exc), EXIT_IN_USE) from None
    except OSError as exc:
        raise _fail("up", f"cannot use {data_dir}: {exc.strerror or exc}", EXIT_IN_USE) from None
    server: NatsServer | None = None
    try:
        if port_in_use(port):
            raise _fail("up", f"port {port} is in use; use --port N or --port 0", EXIT_IN_USE)
        extra: dict[str, object] = {}
        passwords: dict[str, str] = {}
        if secure:
            passwords = accounts.load_or_create_passwords(data_dir)
            extra = {
                "extra_config": accounts.render(Settings().subject_prefix),
                "env": {accounts.password_env(user): pw for user, pw in passwords.items()},
            }
        server = NatsServer(port=port, data_dir=data_dir, name="esdb-gater", sync_always=sync_always, **extra)  # type: ignore[arg-type]
        try:
            server.start()
        except NatsServerError as exc:
            raise _fail("up", f"nats-server did not start: {exc.cause}", EXIT_SERVER_FAILED) from None
        url = server.url
        what = "tenant accounts; " if secure else ""
        durability = "; sync_interval always: fsync before every acknowledgement" if sync_always else ""
        _say(f"nats-server {url} (embedded: {why}; {what}JetStream data in {data_dir / 'jetstream'}{durability})")
        _local_hmac_secret(data_dir)
        stop_now = server.terminate
        if len(groups) > 1:
            overrides: dict[str, object] = {"auto_create_stores": True}
            if secure:
                overrides |= accounts.secure_settings()
                settings = _settings(url, **overrides)
                ready = _secure_banner(url, settings, data_dir, passwords["demo"])
            else:
                settings = _settings(url, **overrides)
                ready = _ready_banner(url, settings)
            specs = _specs(groups, overrides, passwords if secure else None)
            _run_children("up", specs, url, connect_timeout, level, ready, on_force_exit=stop_now)
        elif secure:
            settings = _settings(url, auto_create_stores=True, **accounts.secure_settings())
            ready = _secure_banner(url, settings, data_dir, passwords["demo"])
            _run("up", _run_secure(settings, passwords, ready, connect_timeout, stop_now))
        else:
            settings = _settings(url, auto_create_stores=True)
            ready = _ready_banner(url, settings)
            _run(
                "up",
                run_services(list(SERVICES), settings, ready, connect_timeout=connect_timeout, on_force_exit=stop_now),
            )
    finally:
        if server is not None:
            _stop_server(server)
        lock.release()


async def _run_secure(
    settings: Settings,
    passwords: dict[str, str],
    on_ready: Callable[[], None],
    connect_timeout: float,
    on_force_exit: Callable[[], None],
) -> None:
    """Every service on its own connection as its own NATS user (the accounts layout gives each
    user only what its service needs); then like ``run_services``: wait for a signal, drain."""

    async def start() -> list[Running]:
        running: list[Running] = []
        try:
            for name in SERVICES:
                own = settings.model_copy(update={"nats_user": name, "nats_password": SecretStr(passwords[name])})
                running.append(await start_services([name], own, connect_timeout=connect_timeout))
        except BaseException:
            for r in reversed(running):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(r.stop(step_timeout=2.0), 5.0)
            raise
        return running

    await run_until_signal(start, on_ready, on_force_exit=on_force_exit)


def _stop_server(server: NatsServer) -> None:
    """Stop the embedded server (its own session: Ctrl-C never reached it); a Ctrl-C while it
    stops exits at once, leaving it to finish on its own."""
    previous = signal.signal(signal.SIGINT, _force_exit_handler(server))
    try:
        server.stop()
        _say("nats-server stopped")
    finally:
        signal.signal(signal.SIGINT, previous)


def _force_exit_handler(server: NatsServer) -> Callable[[int, FrameType | None], None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        force_exit(server.terminate)

    return handler


def _run(command: str, coro: Coroutine[Any, Any, None]) -> None:
    """Run the services' coroutine; a connect failure is one line and exit 3."""
    try:
        run(coro)
    except ConnectError as exc:
        hint = ""
        if os.environ.get("NATS_URL") and exc.url == os.environ["NATS_URL"] and command == "up":
            hint = "; the URL came from NATS_URL: unset it, or use --embedded for gater's own server"
        raise _fail(command, f"{exc}{hint}", EXIT_UNREACHABLE) from None
    except KeyboardInterrupt:
        # Ctrl-C in the instant before the loop's signal handlers were in place
        raise typer.Exit(EXIT_INTERRUPTED) from None


# --- child processes (gater up, gater serve --instances N) ---------------------------------------


def _groups(processes: int | None) -> list[list[str]]:
    """The services split over ``processes`` processes (None: one each), the stream service first."""
    names = list(SERVICES)
    n = len(names) if processes is None else min(processes, len(names))
    return [names[i::n] for i in range(n)]


def _specs(
    groups: list[list[str]], overrides: dict[str, object], passwords: dict[str, str] | None = None
) -> list[ChildSpec]:
    env = settings_env(overrides)
    specs = []
    for group in groups:
        own = dict(env)
        if passwords is not None:  # --secure: one service per process, as its own NATS user
            (name,) = group
            own |= {"ESDB_GATER_NATS_USER": name, "ESDB_GATER_NATS_PASSWORD": passwords[name]}
        specs.append(ChildSpec("+".join(group), group, own))
    return specs


async def _reachable(url: str, connect_timeout: float, settings: Settings | None = None) -> None:
    """Fail in one line (exit 3) before starting children when NATS does not answer."""
    user = settings.nats_user if settings else None
    password = settings.nats_password.get_secret_value() if settings and settings.nats_password else None
    nc = await connect(url, "esdb-gater-supervisor", user, password, connect_timeout=connect_timeout)
    await nc.close()


def _run_children(
    command: str,
    specs: list[ChildSpec],
    url: str,
    connect_timeout: float,
    level: str,
    on_ready: Callable[[], None] | None,
    ready_file: Path | None = None,
    on_force_exit: Callable[[], None] | None = None,
) -> None:
    """``specs`` as child processes until Ctrl-C (supervise.py); a non-zero result is the exit code."""

    def say(line: str) -> None:
        _err.print(line, markup=False)

    code = 0

    async def go() -> None:
        nonlocal code
        code = await supervise(
            command, specs, url, connect_timeout, level, say, on_ready, ready_file, on_force_exit=on_force_exit
        )

    _run(command, go())
    if code:
        raise typer.Exit(code)


# --- gater serve -------------------------------------------------------------------------------


@app.command()
def serve(
    ctx: typer.Context,
    services: Annotated[
        list[str],
        typer.Argument(metavar="SERVICE...", help=f"any of: {', '.join(SERVICES)}, or all", show_default=False),
    ],
    nats: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="NATS URL(s), comma-separated [default: ESDB_GATER_NATS_URL, else nats://127.0.0.1:4222]",
            show_default=False,
        ),
    ] = None,
    ready_file: Annotated[
        Path | None,
        typer.Option(
            metavar="PATH",
            dir_okay=False,
            help="once started, write this process's ADR-32 instance ids here, for "
            "`python -m esdb_gater.shared.tooling.probe --ready-file PATH`"
            " (a container health check); removed on shutdown",
            show_default=False,
        ),
    ] = None,
    instances: Annotated[
        int,
        typer.Option(
            min=1,
            max=256,
            metavar="N",
            help="run N processes of these services, each its own connection in the services' queue "
            "groups, so that the requests spread over N cores (1: this process only)",
        ),
    ] = 1,
    connect_timeout: ConnectTimeout = DEFAULT_CONNECT_TIMEOUT_S,
    verbose: Verbose = 0,
    log_level: Annotated[str | None, typer.Option(hidden=True)] = None,  # set by a parent gater up/serve
) -> None:
    """Run chosen services against an existing NATS (the settings come from ESDB_GATER_* variables)."""
    level = _logging(ctx, logging.INFO, verbose, log_level)
    names = list(SERVICES) if services == ["all"] else services
    unknown = [n for n in names if n not in SERVICES]
    if unknown:
        raise _fail(
            "serve", f"unknown service(s): {', '.join(unknown)}; choose from {', '.join(SERVICES)} or all", EXIT_USAGE
        )
    settings = _settings(nats) if nats else Settings()
    source = "--nats" if nats else ("ESDB_GATER_NATS_URL" if os.environ.get("ESDB_GATER_NATS_URL") else "the default")
    if log_level is None:
        many = f" ({instances} processes)" if instances > 1 else ""
        _err.print(f"gater serve: {', '.join(names)} on NATS {settings.nats_url} (from {source}){many}", markup=False)
    if instances > 1:
        _run("serve", _reachable(settings.nats_url, connect_timeout, settings))
        specs = [ChildSpec(f"{'+'.join(names)}#{i + 1}", names) for i in range(instances)]
        _run_children("serve", specs, settings.nats_url, connect_timeout, level, None, ready_file=ready_file)
        return
    _run("serve", run_services(names, settings, ready_file=ready_file, connect_timeout=connect_timeout))


# --- gater bench -------------------------------------------------------------------------------


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def bench(ctx: typer.Context) -> None:
    """Benchmark the gateway against raw JetStream (all arguments go to the benchmark: gater bench --help)."""
    # the command line is the top layer: it may import bench (shared/ and services/ never do);
    # imported here, not at the top, so that other commands start without it
    from esdb_gater.bench.__main__ import main as bench_main

    raise typer.Exit(int(bench_main(list(ctx.args), prog="gater bench")))


ops.register(app)


def main(argv: list[str] | None = None) -> int:
    """The ``gater`` console script and ``python -m esdb_gater.cli``; returns the exit code."""
    try:
        app(args=argv, prog_name="gater")
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
