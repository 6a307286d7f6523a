"""The zero-work responder: ``python -m esdb_gater.bench.zero NATS_URL[,URL…] SUBJECT [uvloop|asyncio]``.

A nats-py subscriber in a queue group that answers every request with ``b"{}"`` at once. The
benchmark runs it in its own process, so one request to it costs exactly what one extra
request/reply hop through NATS costs a Python service: the floor under any gateway call.

Prints ``ready`` once subscribed; stops on SIGTERM/SIGINT, or by itself when its parent goes
away (so a killed benchmark never leaves it behind).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys

import nats
from nats.aio.msg import Msg

QUEUE = "bench-zero"
REPLY = b"{}"


async def serve(url: str, subject: str) -> None:
    parent = os.getppid()
    servers = [u for u in url.split(",") if u]  # a cluster: every node, like the services
    nc = await nats.connect(servers=servers, name="bench-zero", max_reconnect_attempts=3, reconnect_time_wait=0.2)
    publish = nc.publish

    async def on_request(msg: Msg) -> None:
        if msg.reply:
            await publish(msg.reply, REPLY)

    await nc.subscribe(subject, queue=QUEUE, cb=on_request)
    await nc.flush()
    print("ready", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    while not stop.is_set():
        if os.getppid() != parent:  # the benchmark died without stopping us
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    with contextlib.suppress(Exception):
        await nc.close()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 3):
        print("usage: python -m esdb_gater.bench.zero NATS_URL SUBJECT [uvloop|asyncio]", file=sys.stderr)
        return 2
    loop = args[2] if len(args) == 3 else "asyncio"
    with contextlib.suppress(KeyboardInterrupt):
        if loop == "uvloop":
            import uvloop

            uvloop.run(serve(args[0], args[1]))
        else:
            asyncio.run(serve(args[0], args[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
