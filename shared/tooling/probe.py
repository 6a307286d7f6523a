"""``python -m esdb_gater.shared.tooling.probe``: a health check that needs no network tools, only this package.

    python -m esdb_gater.shared.tooling.probe --ready-file /tmp/gater-ready.json   # this process's instances answer
    python -m esdb_gater.shared.tooling.probe stream subscription                   # some instance of each answers

With ``--ready-file`` (written by ``gater serve --ready-file PATH`` once its services are up), it
sends ADR-32 ``$SRV.PING.<name>.<id>`` to each instance id in the file, so it checks *this*
process — its NATS connection and its event loop — not just any member of the queue group.
With service names it sends ``$SRV.PING.<prefix>-<service>`` and wants one answer.

Exit 0 when everything answered within ``--timeout`` seconds, 1 otherwise (the reason on
stderr). The NATS URL comes from ``--nats``, else ``ESDB_GATER_NATS_URL``, else the default
``nats://127.0.0.1:4222``; a comma-separated list of cluster URLs is fine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

import nats
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

__all__ = ["main", "probe"]


async def probe(url: str, subjects: list[str], within: float) -> list[str]:
    """The ``$SRV.PING`` subjects that did not answer within ``within`` seconds."""
    servers = [u.strip() for u in url.split(",") if u.strip()]

    async def quiet(exc: Exception) -> None:  # the reason is reported once, by main()
        pass

    # secure mode (docs/adr/0014): the container's service user, with its own inbox prefix
    user = os.environ.get("ESDB_GATER_NATS_USER")
    auth: dict[str, str] = {}
    if user:
        password = os.environ.get("ESDB_GATER_NATS_PASSWORD", "")
        auth = {"user": user, "password": password, "inbox_prefix": f"_INBOX.{user}"}
    nc = await nats.connect(
        servers=servers,
        **auth,
        connect_timeout=within,
        max_reconnect_attempts=1,  # each server tried once (0 would mean "forever" to nats-py)
        reconnect_time_wait=0,
        allow_reconnect=False,
        error_cb=quiet,
    )
    try:

        async def one(subject: str) -> str | None:
            try:
                await nc.request(subject, b"", timeout=within)
            except (NoRespondersError, NatsTimeoutError):
                return subject
            return None

        return [s for s in await asyncio.gather(*(one(s) for s in subjects)) if s is not None]
    finally:
        await nc.close()


def _subjects(args: argparse.Namespace) -> list[str]:
    if args.ready_file:
        body = json.loads(Path(args.ready_file).read_text())
        return [f"$SRV.PING.{name}.{sid}" for name, sid in sorted(body["services"].items())]
    return [f"$SRV.PING.{args.prefix}-{name}" for name in args.services]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m esdb_gater.shared.tooling.probe", description="health check over $SRV.PING"
    )
    p.add_argument("services", nargs="*", help="service names (stream, subscription, …): any instance answers")
    p.add_argument("--ready-file", metavar="PATH", help="the file `gater serve --ready-file` wrote: its instances")
    p.add_argument("--nats", default=os.environ.get("ESDB_GATER_NATS_URL", "nats://127.0.0.1:4222"))
    p.add_argument("--prefix", default=os.environ.get("ESDB_GATER_SERVICE_NAME_PREFIX", "esdb"))
    p.add_argument("--timeout", type=float, default=2.0)
    args = p.parse_args(argv)
    if bool(args.ready_file) == bool(args.services):
        p.error("give either --ready-file or service names")
    try:
        subjects = _subjects(args)
    except (OSError, ValueError, KeyError) as exc:
        print(f"unhealthy: no ready file yet ({exc})", file=sys.stderr)
        return 1
    if not subjects:
        print("unhealthy: the ready file names no service", file=sys.stderr)
        return 1
    try:
        silent = asyncio.run(asyncio.wait_for(probe(args.nats, subjects, args.timeout), 3 * args.timeout + 1))
    except Exception as exc:  # cannot connect: unhealthy, with the reason
        print(f"unhealthy: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if silent:
        print(f"unhealthy: no answer on {', '.join(silent)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
