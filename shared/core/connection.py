"""The NATS connection every layer uses: ``FastClient`` (nats-py's client, quicker and more robust
on what it reads), ``connect`` and ``flush_barrier`` (a flush that really waits).

Below the event log and the client alike: the services connect with it (``runtime``), and so
does ``GaterClient`` (``esdb_gater.shared.client``).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg

__all__ = ["FastClient", "connect", "flush_barrier"]

_HEADER_WS = re.compile(r"\s")


class FastClient(Client):
    """nats-py's client with a quicker header parser.

    Every Direct Get reply carries six or more headers, and nats-py 2.16 checks each header name
    for whitespace one character at a time through a generator; a read of 1000 events spent
    ~15% of the service's time there. Same rules, one regex call per name."""

    @staticmethod
    def _parse_header_lines(raw: bytes) -> dict[str, str]:
        out: dict[str, str] = {}
        for line in raw.split(b"\r\n"):
            name, sep, value = line.partition(b":")
            if not sep:
                continue
            try:
                key = name.strip().decode("ascii")
            except UnicodeDecodeError:
                continue
            if _HEADER_WS.search(key):
                continue
            out[key] = value.strip().decode("utf-8", "replace")
        return out

    def _build_message(self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: Any) -> Msg:
        """nats-py decodes subject and reply strictly, and a UnicodeDecodeError in its read loop
        stops the loop for good: one raw ``PUB esdb.api.\xff.stream.version`` from any client
        silenced every subscription of the service's connection. A subject that is not UTF-8 is
        kept with its bad bytes as lone surrogates (so the request is still answered, e.g. an
        ``invalid_request`` for its store token); a reply that is not UTF-8 is dropped (issue 10,
        docs/adr/0013-reply-and-target-subjects.md)."""
        try:
            return super()._build_message(sid, subject, reply, data, headers)  # type: ignore[no-any-return]
        except UnicodeDecodeError:
            try:
                reply_text = bytes(reply).decode()
            except UnicodeDecodeError:
                reply_text = ""
            return self.msg_class(
                subject=bytes(subject).decode("utf-8", "surrogateescape"),
                reply=reply_text,
                data=data,
                headers=headers,
                _client=self,
                _sid=sid,
            )

    async def flush(self, timeout: int = 10) -> None:  # noqa: ASYNC109  (nats-py's signature)
        """A real barrier: see ``flush_barrier``."""
        await flush_barrier(self, timeout, _flush=super().flush)


async def flush_barrier(nc: Client, wait_s: float = 10.0, *, _flush: Any = None) -> None:
    """``nc.flush()`` that really waits for everything sent before it.

    nats-py 2.16 writes the PING of ``flush()`` to the socket at once but leaves other commands
    (SUB, PUB) in a buffer for its flusher task, so the PONG can arrive before a SUB sent just
    earlier reaches the server: a service "started" that way can answer ``no responders`` for a
    few milliseconds, and a fresh subscription can miss a message. Hand the buffer to the
    flusher and wait for it first, then PING."""
    flush_queue = getattr(nc, "_flush_queue", None)
    flusher = getattr(nc, "_flusher_task", None)
    pending = getattr(nc, "_pending_data_size", 0) > 0
    if nc.is_connected and pending and flush_queue is not None and flusher is not None and not flusher.done():
        written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await flush_queue.put(written)
        await asyncio.wait_for(written, wait_s)
    await (_flush or nc.flush)(int(wait_s) or 1)


async def connect(url: str, **options: Any) -> FastClient:
    """Connect a FastClient; ``url`` may list several servers separated by commas."""
    nc = FastClient()
    servers = [u.strip() for u in url.split(",") if u.strip()]
    await nc.connect(servers=servers, **options)
    return nc
