"""The NATS connection every layer uses: ``FastClient`` (nats-py's client, quicker and more robust
on what it reads), ``connect`` and ``flush_barrier`` (a flush that really waits).

Below the event log and the client alike: the services connect with it (``runtime``), and so
does ``GaterClient`` (``esdb_gater.shared.client``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import SlowConsumerError

__all__ = ["FastClient", "connect", "flush_barrier"]

_HEADER_WS = re.compile(r"\s")
log = logging.getLogger(__name__)


# Header names as sent (bytes) → the name, or None for one that is not a valid name. A Direct Get
# reply has ten or so headers, nearly always the same names: checking each name once instead of
# per message halves the parse. Bounded: when full it starts again.
_HEADER_KEYS: dict[bytes, str | None] = {}
_HEADER_KEYS_MAX = 512
_UNSEEN: Any = object()


def _header_key(name: bytes) -> str | None:
    """``name`` stripped, if it is ASCII without whitespace inside (nats-py's rule); remembered."""
    try:
        key: str | None = name.strip().decode("ascii")
    except UnicodeDecodeError:
        key = None
    if key is not None and _HEADER_WS.search(key):
        key = None
    if len(_HEADER_KEYS) >= _HEADER_KEYS_MAX:
        _HEADER_KEYS.clear()
    _HEADER_KEYS[name] = key
    return key


async def _never_called(msg: Msg) -> None:  # the queue of an inline subscription stays empty
    return None


class FastClient(Client):
    """nats-py's client with a quicker header parser and cheaper writes.

    Every Direct Get reply carries six or more headers, and nats-py 2.16 checks each header name
    for whitespace one character at a time through a generator; a read of 1000 events spent
    ~15% of the service's time there. Same rules, one regex call per name.

    ``subscribe_inline``/``inline`` hand each message of a subscription to a plain function right
    in the read loop, instead of the subscription's queue and task: for reply inboxes whose
    handling is "resolve a future" (the event log's JetStream replies) and for service endpoints
    that start a task per request anyway, that saves a queue hop and a task switch per message.
    A hook returns False to leave a message to the subscription's own callback after all."""

    _inline: dict[int, Callable[[Msg], bool]] | None = None

    def inline(self, sub: Subscription, hook: Callable[[Msg], bool]) -> None:
        """Have ``hook`` see ``sub``'s messages first (see the class docstring)."""
        if self._inline is None:
            self._inline = {}
        self._inline[sub._id] = hook

    async def subscribe_inline(self, subject: str, hook: Callable[[Msg], None]) -> Subscription:
        """Subscribe ``subject`` with ``hook`` called synchronously for every message, in order.
        The hook must not block; unsubscribe as usual."""

        def handled(msg: Msg) -> bool:
            hook(msg)
            return True

        sub = await self.subscribe(subject, cb=_never_called)
        self.inline(sub, handled)
        return sub

    async def _process_msg(self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes) -> None:
        hook = self._inline.get(sid) if self._inline else None
        if hook is None:
            await super()._process_msg(sid, subject, reply, data, headers)
            return
        sub = self._subs.get(sid)
        if sub is None:  # unsubscribed since
            self._inline.pop(sid, None)  # type: ignore[union-attr]
            return
        self.stats["in_msgs"] += 1
        self.stats["in_bytes"] += len(data)
        msg = self._build_message(sid, subject, reply, data, await self._process_headers(headers))
        if not msg:
            return
        try:
            if hook(msg):
                return
        except Exception:  # a hook's bug must not stop the read loop of every subscription
            log.exception("inline subscription hook failed on %s", msg.subject)
            return
        # the hook declined: the subscription's queue and callback, as nats-py does it
        sub._pending_size += len(data)
        try:
            sub._pending_queue.put_nowait(msg)
        except asyncio.QueueFull:
            sub._pending_size -= len(data)
            await self._error_cb(SlowConsumerError(subject=msg.subject, reply=msg.reply, sid=sid, sub=sub))

    @staticmethod
    def _parse_header_lines(raw: bytes) -> dict[str, str]:
        out: dict[str, str] = {}
        keys = _HEADER_KEYS
        for line in raw.split(b"\r\n"):
            name, sep, value = line.partition(b":")
            if not sep:
                continue
            key = keys.get(name, _UNSEEN)
            if key is _UNSEEN:  # a header name not seen yet: check it once
                key = _header_key(name)
            if key is None:
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

    # nats-py wakes its flusher task through a queue after every publish (a Future, a queue put
    # and a task switch each); on a service that is two of them per append. Instead, one write per
    # event-loop turn is scheduled with call_soon: publishes made in the same turn still go out
    # in one writelines. Anything unusual (not connected, a forced flush, the flusher gone) takes
    # nats-py's own path, and a socket error is handed to its flusher, which reports it.
    _write_scheduled = False
    WRITE_HIGH_WATER = 4 * 1024 * 1024  # bytes buffered in the socket's transport before publishers wait

    async def _flush_pending(self, force_flush: bool = False) -> Any:
        flusher = self._flusher_task
        if force_flush or not self.is_connected or flusher is None or flusher.done():
            return await super()._flush_pending(force_flush)
        if not self._write_scheduled:
            self._write_scheduled = True
            asyncio.get_running_loop().call_soon(self._write_pending)
        writer = getattr(self._transport, "_io_writer", None)
        if writer is not None and writer.transport.get_write_buffer_size() > self.WRITE_HIGH_WATER:
            await writer.drain()  # the server reads slower than we publish: wait, as nats-py does
        return None

    def _write_pending(self) -> None:
        self._write_scheduled = False
        if self._pending_data_size <= 0 or not self.is_connected or self._transport is None:
            return
        pending = self._pending
        try:
            self._transport.writelines(pending)
        except Exception:  # let nats-py's flusher write again and handle the error its way
            with contextlib.suppress(Exception):
                self._flush_queue.put_nowait(asyncio.get_running_loop().create_future())  # type: ignore[union-attr]
            return
        self._pending = []
        self._pending_data_size = 0

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
