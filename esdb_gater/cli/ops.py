"""The operator commands of ``gater`` (``req``, ``sub``, ``streams``, ``read``, ``subscriptions``,
``links``, ``scavenge``, ``health``): thin wrappers over the public NATS API, so they work
against any deployment. ``register(app)`` adds them to the ``gater`` application.

They speak only the public subjects (``<prefix>.api.<store>.<service>.<op>``, built by
``esdb_gater.shared.core.subjects``) with plain nats-py: nothing here needs the services' code, their settings or
JetStream. Reference with examples: docs/cli.md; decisions: docs/adr/0018-gater-command-line.md
("Operator commands").

Exit codes: 0 success; 1 an error reply (printed as ``code: message``; ``gater req`` prints the
reply itself and exits 0 unless ``--fail``); 2 NATS unreachable, no responders or no reply in
time; ``gater links --wait``: 1 also when the link is stopped or in error, 2 also when it still
lags after ``--wait-timeout``; ``gater health``: 0 healthy, 1 degraded, 2 unhealthy; 130
interrupted (Ctrl-C), except for ``gater sub`` and ``gater read --follow``, whose normal end it is
(0); 141 stdout closed early.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import math
import os
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import nats
import typer
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn
from rich.table import Table

from esdb_gater.shared.core.errors import ERROR_CODE_HEADER, ERROR_HEADER, GatewayError, error_from_envelope
from esdb_gater.shared.core.subjects import Subjects
from esdb_gater.shared.security.authz import bearer_headers

__all__ = ["CliError", "register"]

DEFAULT_URL = "nats://127.0.0.1:4222"
_CONN = "Connection"

EXIT_REPLY_ERROR = 1
EXIT_TRANSPORT = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # as a shell reports a process killed by SIGPIPE


class CliError(Exception):
    """A one-line message for stderr and the exit code; never a traceback."""

    def __init__(self, message: str, code: int = EXIT_REPLY_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


# --- options every command takes (added by @connected, which hands the command one Conn) ------

Server = Annotated[
    str,
    typer.Option(
        "--server",
        "-s",
        envvar=["NATS_URL", "ESDB_GATER_NATS_URL"],
        help="NATS server URL(s), comma-separated",
        rich_help_panel=_CONN,
    ),
]
User = Annotated[str | None, typer.Option(envvar="NATS_USER", help="NATS user", rich_help_panel=_CONN)]
Password = Annotated[
    str | None,
    typer.Option(envvar="NATS_PASSWORD", help="NATS password", show_default=False, rich_help_panel=_CONN),
]
Token = Annotated[
    str | None,
    typer.Option(
        envvar="GATER_TOKEN",
        help="capability token, sent as 'Authorization: Bearer <token>' (capability mode, docs/security.md)",
        show_default=False,
        rich_help_panel=_CONN,
    ),
]
Prefix = Annotated[
    str,
    typer.Option(envvar="ESDB_GATER_SUBJECT_PREFIX", help="subject prefix of the deployment", rich_help_panel=_CONN),
]
Timeout = Annotated[float, typer.Option(help="seconds to wait for each reply", rich_help_panel=_CONN)]
ConnectTimeout = Annotated[float, typer.Option(help="seconds to wait for the NATS connection", rich_help_panel=_CONN)]
InboxPrefix = Annotated[
    str | None,
    typer.Option(help="reply-inbox prefix (e.g. _INBOX.ops for the ops user of --secure)", rich_help_panel=_CONN),
]
Json = Annotated[bool, typer.Option("--json", help="print JSON for scripts instead of a table")]


@dataclass(frozen=True, slots=True)
class Conn:
    server: str = DEFAULT_URL
    user: str | None = None
    password: str | None = None
    token: str | None = None
    prefix: str = "esdb"
    timeout: float = 5.0
    connect_timeout: float = 3.0
    inbox_prefix: str | None = None


# name, option, default: the connection options in the order --help lists them
_CONN_OPTIONS: tuple[tuple[str, Any, Any], ...] = (
    ("server", Server, DEFAULT_URL),
    ("user", User, None),
    ("password", Password, None),
    ("token", Token, None),
    ("prefix", Prefix, "esdb"),
    ("timeout", Timeout, 5.0),
    ("connect_timeout", ConnectTimeout, 3.0),
    ("inbox_prefix", InboxPrefix, None),
)


def connected(
    *, token: bool = True, prefix: bool = True, timeout: float | None = 5.0
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """The connection options, written once: the command takes ``conn: Conn`` (keyword-only)
    and gets the options of ``_CONN_OPTIONS`` after its own, gathered into that ``Conn``.
    ``token``/``prefix``: whether it has ``--token``/``--prefix``; ``timeout``: the ``--timeout``
    default, None for none (the command has its own ``--timeout``)."""
    skip = {name for name, on in (("token", token), ("prefix", prefix), ("timeout", timeout is not None)) if not on}
    options = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            annotation=annotation,
            default=timeout if name == "timeout" else default,
        )
        for name, annotation, default in _CONN_OPTIONS
        if name not in skip
    ]

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != "conn"]

        def with_conn(**kwargs: Any) -> None:
            conn = Conn(**{p.name: kwargs.pop(p.name) for p in options})
            command(**kwargs, conn=conn)

        with_conn.__name__ = command.__name__
        with_conn.__qualname__ = command.__qualname__
        with_conn.__doc__ = command.__doc__
        with_conn.__signature__ = signature.replace(parameters=[*own, *options])  # type: ignore[attr-defined]
        with_conn.__annotations__ = {p.name: p.annotation for p in [*own, *options]}
        return with_conn

    return decorate


async def _quiet(*_: Any) -> None:
    """nats-py's callbacks log every connection error; the CLI reports one line itself."""


async def connect(conn: Conn) -> Client:
    """A connection that does not reconnect: an unreachable server is one error, within
    ``connect_timeout`` (nats-py's own first connect retries a refused server without end)."""
    servers = [u.strip() for u in conn.server.split(",") if u.strip()]
    failed: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
    errors: list[BaseException] = []

    async def on_error(exc: BaseException) -> None:
        errors.append(exc)
        if len(errors) >= len(servers) and not failed.done():
            failed.set_result(exc)

    options: dict[str, Any] = {
        "servers": servers,
        "name": "gater-cli",
        "connect_timeout": conn.connect_timeout,
        "allow_reconnect": False,
        "max_reconnect_attempts": 0,
        "error_cb": on_error,
        "disconnected_cb": _quiet,
        "closed_cb": _quiet,
    }
    if conn.user:
        options["user"] = conn.user
        options["password"] = conn.password or ""
    if conn.inbox_prefix:
        options["inbox_prefix"] = conn.inbox_prefix
    task = asyncio.ensure_future(nats.connect(**options))
    waiters: set[asyncio.Future[Any]] = {task, failed}
    done, _ = await asyncio.wait(
        waiters, timeout=conn.connect_timeout * len(servers) + 1.0, return_when=asyncio.FIRST_COMPLETED
    )
    exc: BaseException | None = None
    if task in done:
        exc = task.exception()
        if exc is None:
            nc: Client = task.result()
            failed.cancel()
            return nc
    else:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        exc = failed.result() if failed.done() and not failed.cancelled() else None
    if exc is None or isinstance(exc, TimeoutError | NatsTimeoutError):
        reason = f"no answer within {conn.connect_timeout:g}s"
    elif isinstance(exc, ConnectionRefusedError):
        reason = "connection refused"
    else:
        reason = (str(exc).strip() or type(exc).__name__).removeprefix("nats: ")
    raise CliError(f"cannot connect to NATS at {conn.server}: {reason}", EXIT_TRANSPORT)


def _headers(conn: Conn, extra: dict[str, str] | None = None) -> dict[str, str] | None:
    headers = {**bearer_headers(conn.token), **(extra or {})}  # a -H Authorization wins
    return headers or None


async def raw_request(nc: Client, conn: Conn, subject: str, data: bytes, headers: dict[str, str] | None) -> Msg:
    try:
        return await nc.request(subject, data, timeout=conn.timeout, headers=headers)
    except NoRespondersError:
        raise CliError(f"no responders on {subject}", EXIT_TRANSPORT) from None
    except (NatsTimeoutError, TimeoutError):
        raise CliError(f"no reply on {subject} within {conn.timeout:g}s", EXIT_TRANSPORT) from None


async def call(nc: Client, conn: Conn, store: str, service: str, op: str, body: dict[str, Any]) -> Any:
    """One request on the public API: the decoded reply, or the error it carries raised."""
    subject = Subjects(conn.prefix).api(store, service, op)
    msg = await raw_request(nc, conn, subject, json.dumps(body).encode(), _headers(conn))
    try:
        reply = json.loads(msg.data) if msg.data else None
    except ValueError:
        raise CliError(f"{subject} answered something that is not JSON", EXIT_REPLY_ERROR) from None
    if msg.headers and ERROR_CODE_HEADER in msg.headers:
        raise error_from_envelope(reply)
    return reply


def _run(conn: Conn, body: Callable[[Client], Awaitable[int]], *, interrupt_code: int = EXIT_INTERRUPTED) -> None:
    """Connect, run ``body``, close; every failure one line on stderr and an exit code."""

    async def main() -> int:
        nc = await connect(conn)
        try:
            return await body(nc)
        finally:
            if not nc.is_closed:
                with contextlib.suppress(Exception):  # closing is best effort
                    await asyncio.wait_for(nc.close(), 2.0)

    code = _run_coro(main(), interrupt_code=interrupt_code)
    raise typer.Exit(code)


def _run_coro(coro: Coroutine[Any, Any, int], *, interrupt_code: int) -> int:
    try:
        return asyncio.run(coro)
    except CliError as exc:
        _fail_line(exc.message)
        return exc.code
    except GatewayError as exc:
        _fail_line(f"{error_code(exc)}: {exc.message}")
        return EXIT_REPLY_ERROR
    except KeyboardInterrupt:
        return interrupt_code
    except BrokenPipeError:  # `gater streams … | head`: the reader left; say nothing
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except (NatsError, OSError) as exc:  # e.g. the connection was lost half-way
        _fail_line(f"NATS: {str(exc).strip() or type(exc).__name__}")
        return EXIT_TRANSPORT


def error_code(exc: GatewayError) -> str:
    """The code the reply carried (one this version does not know is kept in ``details``)."""
    if type(exc) is GatewayError and "code" in exc.details:
        return str(exc.details["code"])
    return str(exc.code.value)


def _fail_line(message: str) -> None:
    print(f"gater: {message}", file=sys.stderr, flush=True)


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _json_line(obj: Any) -> None:
    _out(json.dumps(obj, ensure_ascii=False, separators=(",", ":")))


def _console() -> Console:
    """Tables on stdout; piped output (no terminal, no COLUMNS) is 200 columns wide instead of
    rich's 80, so that scripts and logs get whole names."""
    width = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 200
    return Console(highlight=False, soft_wrap=False, width=width)


def _err_console() -> Console:
    return Console(stderr=True, highlight=False)


def _s(n: int) -> str:
    return "" if n == 1 else "s"


def _when(epoch_us: Any) -> str:
    if not isinstance(epoch_us, int):
        return ""
    dt = datetime.fromtimestamp(epoch_us / 1_000_000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _when_ms(ms: Any) -> str:
    return _when(ms * 1000) if isinstance(ms, int) else ""


def _preview(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= width else text[: width - 1] + "…"


# --- req and sub --------------------------------------------------------------------------------


def _parse_headers(values: list[str] | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition(":")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{item!r} is not KEY:VALUE", param_hint="--header")
        headers[key.strip()] = value.strip()
    return headers


@connected(prefix=False)
def req(
    subject: Annotated[str, typer.Argument(help="subject to send the request to, e.g. esdb.api.demo.stream.version")],
    body: Annotated[str, typer.Argument(help="request body; '-' reads it from stdin")] = "{}",
    header: Annotated[
        list[str] | None, typer.Option("--header", "-H", help="header KEY:VALUE (repeatable)", show_default=False)
    ] = None,
    fail: Annotated[
        bool, typer.Option("--fail", "-f", help="exit 1 on an error reply (default: print it and exit 0)")
    ] = False,
    *,
    conn: Conn,
) -> None:
    """Send one request and print the reply, like `nats req`.

    A success reply prints its body. An error reply prints the ADR-32 headers
    (Nats-Service-Error, Nats-Service-Error-Code), a blank line and the body.
    No responders or no reply in time: one line on stderr, exit 2."""
    data = sys.stdin.buffer.read() if body == "-" else body.encode()
    headers = _headers(conn, _parse_headers(header))

    async def run(nc: Client) -> int:
        msg = await raw_request(nc, conn, subject, data, headers)
        text = msg.data.decode("utf-8", "replace")
        if msg.headers and ERROR_CODE_HEADER in msg.headers:
            _out(f"{ERROR_HEADER}: {msg.headers.get(ERROR_HEADER, '')}")
            _out(f"{ERROR_CODE_HEADER}: {msg.headers[ERROR_CODE_HEADER]}")
            _out("")
            _out(text)
            return EXIT_REPLY_ERROR if fail else 0
        _out(text)
        return 0

    _run(conn, run)


@connected(token=False, prefix=False, timeout=None)
def sub(
    subject: Annotated[str, typer.Argument(help="subject to subscribe to (wildcards * and > allowed)")],
    count: Annotated[int | None, typer.Option(min=1, help="stop after N messages", show_default=False)] = None,
    wait: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            min=0,
            help="stop after S seconds (exit 2 if --count messages did not all arrive)",
            show_default=False,
        ),
    ] = None,
    headers: Annotated[bool, typer.Option("--headers", help="print each message's headers too")] = False,
    queue: Annotated[str, typer.Option(help="join this queue group")] = "",
    ack: Annotated[
        bool,
        typer.Option(
            "--ack",
            help="reply with an empty body to each message that has a reply subject (acknowledges a "
            "subscription delivery)",
        ),
    ] = False,
    as_json: Json = False,
    *,
    conn: Conn,
) -> None:
    """Print the messages on a subject until --count, --timeout or Ctrl-C.

    'subscribed to SUBJECT' goes to stderr once the server has the subscription. --json
    prints one line per message: {"subject", "reply", "headers", "data"} (data parsed when JSON)."""

    async def run(nc: Client) -> int:
        queue_: asyncio.Queue[Msg] = asyncio.Queue()

        async def on_msg(msg: Msg) -> None:
            await queue_.put(msg)

        await nc.subscribe(subject, queue=queue, cb=on_msg)
        await nc.flush(timeout=math.ceil(conn.connect_timeout))
        print(f"subscribed to {subject}", file=sys.stderr, flush=True)
        deadline = None if wait is None else time.monotonic() + wait
        received = 0
        while count is None or received < count:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            try:
                msg = await asyncio.wait_for(queue_.get(), left)
            except TimeoutError:
                break
            received += 1
            _print_msg(msg, received, headers, as_json)
            if ack and msg.reply:
                await msg.respond(b"")
        if count is not None and received < count:
            raise CliError(f"received {received} of {count} messages on {subject} within {wait:g}s", EXIT_TRANSPORT)
        return 0

    _run(conn, run, interrupt_code=0)


def _print_msg(msg: Msg, n: int, with_headers: bool, as_json: bool) -> None:
    text = msg.data.decode("utf-8", "replace")
    if as_json:
        try:
            data: Any = json.loads(msg.data) if msg.data else None
        except ValueError:
            data = text
        _json_line(
            {"subject": msg.subject, "reply": msg.reply or None, "headers": dict(msg.headers or {}), "data": data}
        )
        return
    _out(f'[#{n}] Received on "{msg.subject}"' + (f' (reply to "{msg.reply}")' if msg.reply else ""))
    if with_headers:
        for key, value in (msg.headers or {}).items():
            _out(f"{key}: {value}")
    _out(text)
    _out("")


# --- listing commands ---------------------------------------------------------------------------


@connected()
def streams(
    store: Annotated[str, typer.Argument(help="store id")],
    limit: Annotated[
        int | None, typer.Option(min=1, help="list at most N ids (default: all)", show_default=False)
    ] = None,
    as_json: Json = False,
    *,
    conn: Conn,
) -> None:
    """The store's stream ids, sorted (stream.list, every page). --json: {"streams": [...]}."""

    async def run(nc: Client) -> int:
        ids = await list_streams(nc, conn, store, limit)
        if as_json:
            _json_line({"streams": ids})
            return 0
        table = Table()
        table.add_column("stream", overflow="fold")
        for sid in ids:
            table.add_row(sid)
        console = _console()
        console.print(table)
        console.print(f"{len(ids)} stream{_s(len(ids))}")
        return 0

    _run(conn, run)


async def list_streams(nc: Client, conn: Conn, store: str, limit: int | None = None) -> list[str]:
    ids: list[str] = []
    cursor: str | None = None
    while limit is None or len(ids) < limit:
        page = 1000 if limit is None else min(1000, limit - len(ids))
        reply = await call(nc, conn, store, "stream", "list", {"cursor": cursor, "limit": page})
        ids.extend(reply["streams"])
        cursor = reply.get("next")
        if not cursor:
            break
    return ids


@connected()
def read(
    store: Annotated[str, typer.Argument(help="store id")],
    stream: Annotated[str, typer.Argument(help="stream id")],
    start: Annotated[
        int | None,
        typer.Option(
            "--from", help="first version (default: 0; with --backward: -1, the last event)", show_default=False
        ),
    ] = None,
    count: Annotated[
        int | None,
        typer.Option(min=0, help="events to print (default: 100; with --follow: no limit)", show_default=False),
    ] = None,
    backward: Annotated[bool, typer.Option("--backward", help="newest first")] = False,
    follow: Annotated[
        bool, typer.Option("--follow", "-F", help="then keep printing new events (polls stream.read) until Ctrl-C")
    ] = False,
    interval: Annotated[float, typer.Option(min=0.05, help="seconds between polls with --follow")] = 0.5,
    raw: Annotated[bool, typer.Option("--raw", help="events as stored (not upcast)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON event per line instead of a table")] = False,
    *,
    conn: Conn,
) -> None:
    """A stream's events: version, type, time and a data preview (stream.read, paged).

    --follow prints the events from --from on and then new ones as they are appended (a waiting
    --follow also waits for a stream that does not exist yet); --count then stops it after N."""
    if backward and follow:
        raise typer.BadParameter("--follow reads forward; drop --backward", param_hint="--follow")
    reader = _Reader(conn, store, stream, raw, as_json)
    first = (-1 if backward else 0) if start is None else start
    limit = count if count is not None else (None if follow else 100)

    async def run(nc: Client) -> int:
        if backward:
            await reader.backward(nc, first, limit)
        elif follow:
            await reader.follow(nc, first, limit, interval)
        else:
            await reader.forward(nc, first, limit)
        return 0

    _run(conn, run, interrupt_code=0 if follow else EXIT_INTERRUPTED)


class _Reader:
    """Pages of stream.read printed as they come (one table per page with the same column
    widths, the header once), or as JSON lines."""

    PAGE = 1000

    def __init__(self, conn: Conn, store: str, stream: str, raw: bool, as_json: bool) -> None:
        self.conn, self.store, self.stream, self.raw, self.as_json = conn, store, stream, raw, as_json
        self.printed = 0
        self.console = _console()

    async def _page(self, nc: Client, start: int, count: int, direction: str) -> list[dict[str, Any]]:
        body: dict[str, Any] = {
            "stream_id": self.stream,
            "start_version": start,
            "count": count,
            "direction": direction,
        }
        if self.raw:
            body["raw"] = True
        reply = await call(nc, self.conn, self.store, "stream", "read", body)
        events: list[dict[str, Any]] = reply["events"]
        return events

    def emit(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        if self.as_json:
            for ev in events:
                _json_line(ev)
            self.printed += len(events)
            return
        table = Table(box=None, show_header=self.printed == 0, header_style="bold", pad_edge=False)
        table.add_column("version", justify="right", width=8, no_wrap=True)
        table.add_column("type", width=24, no_wrap=True, overflow="ellipsis")
        table.add_column("time (UTC)", width=24, no_wrap=True)
        table.add_column("data", no_wrap=True, overflow="ellipsis")
        for ev in events:
            table.add_row(
                str(ev.get("version")), str(ev.get("event_type")), _when(ev.get("epoch_us")), _preview(ev.get("data"))
            )
        self.console.print(table)
        self.printed += len(events)

    async def _head(self, nc: Client) -> int:
        reply = await call(nc, self.conn, self.store, "stream", "version", {"stream_id": self.stream})
        return int(reply["version"])

    async def forward(self, nc: Client, start: int, limit: int | None) -> int:
        """Print versions from ``start`` up to the head (or ``limit`` events); return the next
        version to read. It reads windows of versions, so a gap left by scavenging does not end
        the read early."""
        pos = start
        head: int | None = None
        while limit is None or self.printed < limit:
            want = self.PAGE if limit is None else min(self.PAGE, limit - self.printed)
            events = await self._page(nc, pos, want, "forward")
            self.emit(events)
            # next: after the last event printed (never past a version not yet read: events
            # appended while we read come in the next page or the next poll)
            pos = int(events[-1]["version"]) + 1 if events else pos + want
            if len(events) == want:
                continue
            if head is None:
                head = await self._head(nc)
            if pos > head:
                return pos if events else max(start, head + 1)
        return pos

    async def backward(self, nc: Client, start: int, limit: int | None) -> None:
        pos = start
        while limit is None or self.printed < limit:
            want = self.PAGE if limit is None else min(self.PAGE, limit - self.printed)
            events = await self._page(nc, pos, want, "backward")
            self.emit(events)
            if pos == -1:
                if not events:
                    return
                pos = int(events[0]["version"])
            pos -= want
            if pos < 0:
                return

    async def follow(self, nc: Client, start: int, limit: int | None, interval: float) -> None:
        pos = start
        waiting_said = False
        while limit is None or self.printed < limit:
            try:
                pos = await self.forward(nc, pos, limit)
            except GatewayError as exc:
                if error_code(exc) != "stream_not_found":
                    raise
                if not waiting_said:
                    print(f"waiting for stream {self.stream!r} in store {self.store!r}", file=sys.stderr, flush=True)
                    waiting_said = True
            if limit is not None and self.printed >= limit:
                return
            await asyncio.sleep(interval)


@connected()
def subscriptions(
    store: Annotated[str, typer.Argument(help="store id")],
    as_json: Json = False,
    *,
    conn: Conn,
) -> None:
    """The store's persistent subscriptions: checkpoint, lag, parked, active (subscription.list)."""

    async def run(nc: Client) -> int:
        reply = await call(nc, conn, store, "subscription", "list", {})
        if as_json:
            _json_line(reply)
            return 0
        table = Table()
        for col in ("name", "type", "selector", "subscriber"):
            table.add_column(col, overflow="fold")
        for col in ("checkpoint", "lag", "parked"):
            table.add_column(col, justify="right", no_wrap=True)
        table.add_column("active", no_wrap=True)
        for s in reply["subscriptions"]:
            lag = f"{s.get('lag_events', 0)} ({float(s.get('lag_seconds') or 0):.1f}s)"
            table.add_row(
                str(s["name"]),
                str(s["type"]),
                _preview(s.get("selector"), 40),
                str(s.get("subscriber")),
                "-" if s.get("checkpoint") is None else str(s["checkpoint"]),
                lag,
                str(s.get("parked", 0)),
                _yes_no(s.get("active")),
            )
        _console().print(table)
        return 0

    _run(conn, run)


def _yes_no(value: Any) -> str:
    return "[green]yes[/]" if value else "[dim]no[/]"


def _source(source: dict[str, Any]) -> str:
    rest = ", ".join(f"{v}" for k, v in source.items() if k != "type")
    return f"{source.get('type')} {rest}".strip()


@connected()
def links(
    store: Annotated[str, typer.Argument(help="store id")],
    wait: Annotated[
        str | None,
        typer.Option(
            "--wait",
            metavar="NAME",
            help="follow link NAME's backfill (link.info) until it has caught up: exit 0 once it is "
            "running with lag 0, 1 if it is stopped, fails or does not exist, 2 after --wait-timeout",
            show_default=False,
        ),
    ] = None,
    interval: Annotated[float, typer.Option(min=0.05, help="seconds between two link.info polls of --wait")] = 0.5,
    wait_timeout: Annotated[float, typer.Option(min=0.1, help="seconds --wait waits for the link to catch up")] = 600.0,
    as_json: Json = False,
    *,
    conn: Conn,
) -> None:
    """The store's links: status, progress (processed, filtered, last event) and lag (link.list).

    With --wait NAME: poll link NAME (link.info) every --interval seconds with a progress bar of
    its backfill on stderr (plain lines when stderr is not a terminal, none with --json) until it
    is running with lag 0; then print it (a table, or its JSON with --json)."""

    async def run(nc: Client) -> int:
        reply = await call(nc, conn, store, "link", "list", {})
        if as_json:
            _json_line(reply)
            return 0
        _print_links(reply["links"])
        return 0

    async def run_wait(nc: Client) -> int:
        assert wait is not None
        return await _wait_link(nc, conn, store, wait, interval, wait_timeout, as_json)

    _run(conn, run if wait is None else run_wait)


def _print_links(links: list[dict[str, Any]]) -> None:
    table = Table()
    table.add_column("name", overflow="fold")
    table.add_column("source", overflow="fold")
    table.add_column("status", no_wrap=True)
    table.add_column("active", no_wrap=True)
    for col in ("processed", "filtered", "lag"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("last event", overflow="fold")
    colours = {"running": "green", "stopped": "yellow", "error": "red"}
    for link in links:
        last = link.get("last_event")
        last_text = f"{last.get('stream_id')}@{last.get('version')} {_when_ms(last.get('at'))}" if last else "-"
        status = str(link.get("status"))
        if link.get("error"):
            status += f" ({link['error']})"
        table.add_row(
            str(link["name"]),
            _source(link.get("source") or {}),
            f"[{colours.get(str(link.get('status')), 'white')}]{status}[/]",
            _yes_no(link.get("active")),
            str(link.get("events_processed", 0)),
            str(link.get("events_filtered", 0)),
            str(link.get("lag", 0)),
            last_text,
        )
    _console().print(table)


def _link_line(name: str, link: dict[str, Any]) -> str:
    return (
        f"link {name}: {link.get('status')}, {link.get('events_processed', 0)} copied, "
        f"{link.get('events_filtered', 0)} filtered, lag {link.get('lag', 0)}"
    )


async def _wait_link(
    nc: Client, conn: Conn, store: str, name: str, interval: float, limit: float, as_json: bool
) -> int:
    """``gater links STORE --wait NAME``: poll link.info until the link is running with lag 0
    (0), stopped or in error (1, one line), or ``limit`` seconds passed (2, one line).

    The bar counts source *appends*, the unit of ``lag`` (events_processed counts events, many
    per append, so processed + lag would mix units): its total is the largest lag seen, its
    progress how much of it is gone. For a pattern or ``all`` source the lag counts every append
    of the store (an upper bound), so the bar is an estimate."""
    err = _err_console()
    terminal = err.is_terminal and sys.stderr.isatty()
    lines = not as_json and not terminal  # plain progress lines for logs; nothing for scripts
    deadline = time.monotonic() + limit
    last_line = ""
    last_at = -math.inf
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("appends · {task.fields[copied]} events copied"),
    )
    most = 0
    with Progress(*columns, console=err, transient=True, disable=not terminal) as progress:
        task = progress.add_task(f"link {_preview(name, 30)}", total=None, copied=0)
        while True:
            link = await call(nc, conn, store, "link", "info", {"name": name})
            status, lag = str(link.get("status")), int(link.get("lag") or 0)
            most = max(most, lag)
            progress.update(task, completed=most - lag, total=most, copied=link.get("events_processed", 0))
            line = _link_line(name, link)
            now = time.monotonic()
            if lines and line != last_line and now - last_at >= 1.0:
                print(line, file=sys.stderr, flush=True)
                last_line, last_at = line, now
            if status == "running" and lag == 0:
                break
            if status != "running" or now >= deadline:
                break
            await asyncio.sleep(min(interval, max(0.0, deadline - now)))
    if as_json:
        _json_line(link)
    else:
        if lines and line != last_line:
            print(line, file=sys.stderr, flush=True)
        _print_links([link])
    if status == "running" and lag == 0:
        return 0
    if status == "error":
        raise CliError(f"link '{name}' failed: {link.get('error') or 'no reason given'}")
    if status != "running":
        raise CliError(f"link '{name}' is {status}: start it with link.start to let it catch up")
    raise CliError(f"link '{name}' still has lag {lag} after {limit:g}s", EXIT_TRANSPORT)


# --- scavenge -------------------------------------------------------------------------------------


@connected(timeout=30.0)
def scavenge(
    store: Annotated[str, typer.Argument(help="store id")],
    target: Annotated[
        str,
        typer.Argument(metavar="STREAM_OR_PATTERN", help="a stream id, or a pattern where * is any run of characters"),
    ],
    before: Annotated[
        int | None, typer.Option(help="epoch_us: events with epoch_us <= this may go", show_default=False)
    ] = None,
    before_version: Annotated[
        int | None, typer.Option(min=0, help="versions below this may go", show_default=False)
    ] = None,
    max_age: Annotated[
        float | None, typer.Option(min=0, help="seconds: events older than this may go", show_default=False)
    ] = None,
    keep_versions: Annotated[
        int | None, typer.Option(min=0, help="the newest N events always stay", show_default=False)
    ] = None,
    require_snapshot: Annotated[
        bool,
        typer.Option(
            "--require-snapshot/--no-require-snapshot",
            help="the stream needs a snapshot, and nothing past it goes (docs/api/scavenger.md)",
        ),
    ] = True,
    archive: Annotated[
        bool, typer.Option("--archive", help="write the removed events to the Object Store first")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="report what would go; remove nothing")] = False,
    literal: Annotated[
        bool, typer.Option("--literal", help="STREAM_OR_PATTERN is one stream id even if it contains *")
    ] = False,
    as_json: Json = False,
    *,
    conn: Conn,
) -> None:
    """Remove a stream's old events (scavenger.scavenge, or scavenger.dry_run with --dry-run).

    With a pattern (an id with *): every matching stream of stream.list, one at a time with a
    progress bar, reported like scavenge_matching ({"results", "skipped"}); a stream refused
    with a non-retryable error (e.g. no_snapshot) is skipped. Give at least one of --before,
    --before-version, --max-age, --keep-versions."""
    opts: dict[str, Any] = {
        k: v
        for k, v in {
            "before": before,
            "before_version": before_version,
            "max_age": max_age,
            "keep_versions": keep_versions,
        }.items()
        if v is not None
    }
    opts["require_snapshot"] = require_snapshot
    if archive:
        opts["archive"] = True
    op = "dry_run" if dry_run else "scavenge"

    async def one(nc: Client) -> int:
        report = await call(nc, conn, store, "scavenger", op, {**opts, "stream_id": target})
        if as_json:
            _json_line(report)
        else:
            _print_reports([report], [], dry_run)
        return 0

    async def matching(nc: Client) -> int:
        from esdb_gater.shared.core.patterns import glob  # RE2, as the scavenger matches (linear in the id)

        rx = glob(target)
        err = _err_console()
        listing = err.status(f"listing the streams of {store}") if err.is_terminal else contextlib.nullcontext()
        with listing:
            ids = [sid for sid in await list_streams(nc, conn, store) if rx.fullmatch(sid) is not None]
        results: list[dict[str, Any]] = []
        skipped: list[dict[str, Any]] = []
        columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
        # the bar only on a terminal: piped stderr stays clean for scripts
        with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as progress:
            task = progress.add_task("dry run" if dry_run else "scavenging", total=len(ids))
            for sid in ids:
                progress.update(task, description=_preview(sid, 40))
                try:
                    results.append(await call(nc, conn, store, "scavenger", op, {**opts, "stream_id": sid}))
                except GatewayError as exc:
                    if exc.retryable:
                        raise
                    skipped.append({"stream_id": sid, "code": error_code(exc), "message": exc.message})
                progress.advance(task)
        if as_json:
            _json_line({"results": results, "skipped": skipped})
        else:
            _print_reports(results, skipped, dry_run)
        return 0

    _run(conn, matching if ("*" in target and not literal) else one)


def _print_reports(results: list[dict[str, Any]], skipped: list[dict[str, Any]], dry_run: bool) -> None:
    console = _console()
    table = Table()
    table.add_column("stream", overflow="fold")
    table.add_column("would remove" if dry_run else "removed", justify="right", no_wrap=True)
    table.add_column("versions", no_wrap=True)
    table.add_column("snapshot", justify="right", no_wrap=True)
    table.add_column("archive", overflow="fold")
    total = 0
    for r in results:
        n = int(r.get("deleted_count", 0))
        total += n
        lo, hi = (r.get("deleted_versions") or [0, 0])[:2]
        snap = r.get("snapshot_version")
        key = r.get("archive_key") or "-"
        if r.get("truncated"):
            key += " (truncated: run again)"
        table.add_row(str(r["stream_id"]), str(n), f"{lo}..{hi}" if n else "-", "-" if snap is None else str(snap), key)
    if results:
        console.print(table)
    verb = "would remove" if dry_run else "removed"
    if dry_run:
        console.print("dry run: nothing was removed")
    console.print(f"{verb} {total} event{_s(total)} from {len(results)} stream{_s(len(results))}")
    if skipped:
        skip = Table()
        skip.add_column("stream", overflow="fold")
        skip.add_column("code", no_wrap=True)
        skip.add_column("reason", overflow="fold")
        for s in skipped:
            skip.add_row(str(s["stream_id"]), str(s["code"]), str(s["message"]))
        console.print(f"skipped {len(skipped)} stream{_s(len(skipped))}:")
        console.print(skip)


# --- health ---------------------------------------------------------------------------------------

_HEALTH_EXIT = {"healthy": 0, "degraded": 1, "unhealthy": 2}
_HEALTH_COLOUR = {"healthy": "green", "degraded": "yellow", "unhealthy": "red"}


@connected()
def health(
    as_json: Json = False,
    *,
    conn: Conn,
) -> None:
    """The deployment's health (health.check): status, reason and every check.

    Exit code: 0 healthy, 1 degraded, 2 unhealthy (also when NATS or the health service cannot
    be reached)."""

    async def run(nc: Client) -> int:
        try:
            report = await call(nc, conn, "_", "health", "check", {})
        except GatewayError as exc:
            raise CliError(f"{error_code(exc)}: {exc.message}", EXIT_TRANSPORT) from None
        status = str(report.get("status"))
        if as_json:
            _json_line(report)
            return _HEALTH_EXIT.get(status, 2)
        console = _console()
        colour = _HEALTH_COLOUR.get(status, "red")
        reason = report.get("reason")
        console.print(f"[bold {colour}]{status}[/]" + (f": {reason}" if reason else ""), soft_wrap=True)
        table = Table(box=None, header_style="bold", pad_edge=False)
        table.add_column("check", no_wrap=True)
        table.add_column("ok", no_wrap=True)
        table.add_column("details", overflow="fold")
        for name, check in (report.get("checks") or {}).items():
            ok = bool(check.get("ok")) if isinstance(check, dict) else False
            facts = {k: v for k, v in check.items() if k != "ok"} if isinstance(check, dict) else {"value": check}
            table.add_row(name, "[green]✔[/]" if ok else "[red]✘[/]", _facts(facts))
        console.print(table)
        return _HEALTH_EXIT.get(status, 2)

    _run(conn, run)


def _facts(facts: dict[str, Any]) -> str:
    parts = []
    for key, value in facts.items():
        if isinstance(value, dict):
            value = " ".join(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, list):
            value = ",".join(str(v) for v in value) if value else "-"
        parts.append(f"{key}={value}")
    return "  ".join(parts)


# --- registration -------------------------------------------------------------------------------

_COMMANDS: tuple[tuple[str, Callable[..., None]], ...] = (
    ("req", req),
    ("sub", sub),
    ("streams", streams),
    ("read", read),
    ("subscriptions", subscriptions),
    ("links", links),
    ("scavenge", scavenge),
    ("health", health),
)


def register(app: typer.Typer) -> None:
    """Add the operator commands to the ``gater`` typer application."""
    for name, fn in _COMMANDS:
        app.command(name, rich_help_panel="Operator commands (public API)")(fn)


def _standalone() -> None:
    """``python -m esdb_gater.cli.ops``: only the operator commands (tests, and before they are wired
    into ``gater``)."""
    app = typer.Typer(name="gater", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
    register(app)
    app()


if __name__ == "__main__":
    _standalone()
