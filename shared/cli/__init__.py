"""The ``gater`` command.

gater up [--data-dir DIR] [--port N] [--nats URL] [--sync always] [--secure]
                                                    everything on an embedded nats-server
                                                    (--secure: tenant accounts, ADR 0014)
gater serve SERVICE... [--nats URL] [--ready-file F] chosen services against a given NATS
gater bench [--quick] ...                           the benchmark (see bench/)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from pydantic import SecretStr

from shared import accounts
from shared.natsserver import NatsServer
from shared.runner import SERVICES, Running, run, run_services, start_services
from shared.settings import Settings
from shared.telemetry import setup_telemetry, shutdown_telemetry

__all__ = ["main"]


def _settings(args: argparse.Namespace, **overrides: object) -> Settings:
    kwargs: dict[str, object] = dict(overrides)
    if getattr(args, "nats", None):
        kwargs["nats_url"] = args.nats
    return Settings(**kwargs)  # type: ignore[arg-type]


async def _run_secure(settings: Settings, passwords: dict[str, str], on_ready: Callable[[], None]) -> None:
    """Every service on its own connection as its own NATS user (the accounts layout gives each
    user only what its service needs); then like ``run_services``: wait for a signal, drain."""
    setup_telemetry("esdb-gater")
    running: list[Running] = []
    try:
        for name in SERVICES:
            own = settings.model_copy(update={"nats_user": name, "nats_password": SecretStr(passwords[name])})
            running.append(await start_services([name], own))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        on_ready()
        await stop.wait()
    finally:
        for r in reversed(running):
            await r.stop()
        shutdown_telemetry()


def _up_secure(args: argparse.Namespace) -> int:
    """``gater up --secure``: the embedded server with the tenant accounts of shared/accounts.py."""
    if args.nats or os.environ.get("NATS_URL"):
        print(
            "gater up: --secure runs its own server with the tenant accounts; for a server of yours, include "
            "nats/accounts.conf in its config and run `gater serve` per service (see compose.yaml)",
            file=sys.stderr,
        )
        return 2
    data_dir = Path(args.data_dir).resolve()
    base = Settings()
    passwords = accounts.load_or_create_passwords(data_dir)
    server = NatsServer(
        port=args.port,
        data_dir=data_dir,
        name="esdb-gater",
        sync_always=args.sync == "always",
        extra_config=accounts.render(base.subject_prefix),
        env={accounts.password_env(user): pw for user, pw in passwords.items()},
    ).start()
    url = server.url
    print(f"nats-server {url} (tenant accounts; JetStream data in {data_dir / 'jetstream'})", flush=True)
    settings = _settings(args, nats_url=url, auto_create_stores=True, **accounts.secure_settings())
    demo = passwords["demo"]

    def ready() -> None:
        print(f"esdb-gater is up (secure): services {', '.join(SERVICES)} on {url}, each as its own user", flush=True)
        print(f"  tenant demo (store demo): user demo, password {demo}", flush=True)
        print(
            f"  try: nats --server {url} --user demo --password {demo} req "
            f'{settings.subject_prefix}.api.demo.stream.version \'{{"stream_id":"x"}}\'',
            flush=True,
        )
        others = ", ".join(t.user for t in accounts.DEFAULT_TENANTS if t.user != "demo")
        print(f"  other tenants: {others}; passwords in {data_dir / accounts.PASSWORDS_FILE}", flush=True)
        print("  Ctrl-C stops everything", flush=True)

    try:
        with contextlib.suppress(KeyboardInterrupt):
            run(_run_secure(settings, passwords, ready))
    finally:
        server.stop()
        print("nats-server stopped", flush=True)
    return 0


def _up(args: argparse.Namespace) -> int:
    if args.secure:
        return _up_secure(args)
    server: NatsServer | None = None
    url = args.nats or os.environ.get("NATS_URL")
    if url and args.sync == "always":
        print(
            "gater up: --sync always sets the embedded server's sync_interval; with --nats/NATS_URL set "
            "'sync_interval: always' in that server's jetstream block instead",
            file=sys.stderr,
        )
        return 2
    if not url:
        data_dir = Path(args.data_dir).resolve()
        sync_always = args.sync == "always"
        server = NatsServer(port=args.port, data_dir=data_dir, name="esdb-gater", sync_always=sync_always).start()
        url = server.url
        durability = "; sync_interval always: fsync before every acknowledgement" if sync_always else ""
        print(f"nats-server {server.url} (JetStream data in {data_dir / 'jetstream'}{durability})", flush=True)
    settings = _settings(args, nats_url=url, auto_create_stores=True)

    def ready() -> None:
        print(f"esdb-gater is up: services {', '.join(SERVICES)} on {url}", flush=True)
        print(f'  try: nats req {settings.subject_prefix}.api.demo.stream.version \'{{"stream_id":"x"}}\'', flush=True)
        print("  Ctrl-C stops everything", flush=True)

    try:
        with contextlib.suppress(KeyboardInterrupt):
            run(run_services(list(SERVICES), settings, on_ready=ready))
    finally:
        if server is not None:
            server.stop()
            print("nats-server stopped", flush=True)
    return 0


def _serve(args: argparse.Namespace) -> int:
    names = list(SERVICES) if args.services == ["all"] else args.services
    settings = _settings(args)
    with contextlib.suppress(KeyboardInterrupt):
        run(run_services(names, settings, ready_file=args.ready_file))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gater", description="Event-store gateway on NATS JetStream")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="cmd", required=True)

    up = sub.add_parser("up", help="run a local nats-server with JetStream and every service")
    up.add_argument("--data-dir", default=os.environ.get("ESDB_GATER_DATA_DIR", ".gater-data"))
    up.add_argument("--port", type=int, default=4222, help="client port of the embedded server (0 = any)")
    up.add_argument("--nats", help="use this NATS URL instead of starting a server (or NATS_URL)")
    up.add_argument(
        "--sync",
        choices=["default", "always"],
        default="default",
        help="JetStream sync_interval of the embedded server: default (acknowledge before fsync; fsync "
        "every 2 min) or always (fsync every write before acknowledging it; slower, survives power loss)",
    )
    up.add_argument(
        "--secure",
        action="store_true",
        help="tenant accounts (nats/accounts.conf, docs/adr/0014): each service connects as its own user, "
        "tenants demo/orders/billing reach only their store; prints the demo tenant's credentials",
    )
    up.set_defaults(func=_up)

    serve = sub.add_parser("serve", help="run chosen services against an existing NATS")
    serve.add_argument("services", nargs="+", help=f"any of: {', '.join(SERVICES)}, or all")
    serve.add_argument("--nats", help="NATS URL(s), comma-separated (default: ESDB_GATER_NATS_URL)")
    serve.add_argument(
        "--ready-file",
        metavar="PATH",
        help="once started, write this process's ADR-32 instance ids here, for `python -m shared.probe "
        "--ready-file PATH` (a container health check); removed on shutdown",
    )
    serve.set_defaults(func=_serve)

    bench = sub.add_parser("bench", help="benchmark the gateway against raw JetStream", add_help=False)
    bench.set_defaults(func=None)

    args, rest = parser.parse_known_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    logging.getLogger("nats").setLevel(logging.WARNING)
    if args.cmd == "bench":
        import importlib

        bench_main = importlib.import_module("bench.__main__").main
        return int(bench_main(rest))
    if rest:
        parser.error(f"unrecognised arguments: {' '.join(rest)}")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
