"""``gater bench`` / ``gater-bench`` / ``python -m esdb_gater.bench``: the gateway against raw JetStream, in one run.

Starts its own nats-server (port 0, temp dir) — or, with ``--replicas 3``, a 3-node cluster
on loopback — the stream service and a zero-work responder (each in its own process), measures
every scenario for a fixed window, prints a markdown table with the command line and versions,
and stops everything it started — also on Ctrl-C, SIGTERM or an error. Targets are
informational: the exit code is 0 whenever the run completes.

    gater bench [--quick] [--storage file|memory] [--replicas 1|3] [--sync default|always]
                [--duration S] [--tail-events N]
                [--only seq,conc,conc2,atomic,multi,forward,readall,tail,readcost,sub,upcast,link,cause,storage,channel]
                [--loop uvloop|asyncio] [--instances N] [--wait-quiet S] [--json FILE]
                [--profile-service FILE] [--profile-channel FILE]

See docs/performance.md for what each row measures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib.metadata import version as dist_version
from pathlib import Path
from types import FrameType
from typing import Any

import nats
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import StorageType, StreamConfig
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from esdb_gater.bench.causation import chain_lookup
from esdb_gater.bench.channel import channel_child, channel_vs_raw
from esdb_gater.bench.cpu import CpuMeter, background_load
from esdb_gater.bench.link import link_forwarding
from esdb_gater.bench.measure import Interrupted, Sample, check_stop, concurrent, request_stop, sequential, set_meter
from esdb_gater.bench.ops import (
    BenchError,
    DirectBatchRead,
    Errors,
    GatewayAppend,
    GatewayAppendMulti,
    GatewayRead,
    OrderedConsumerRead,
    Pipeline,
    RawAppend,
    RawAtomicBatch,
    RawMultiBatch,
    SingleAppends,
    ZeroCall,
    commit_headers,
    commit_payload,
    event_json,
)
from esdb_gater.bench.procs import Child, rss_mb, service_child, zero_child
from esdb_gater.bench.readcost import read_cost
from esdb_gater.bench.report import Check, Report, Row
from esdb_gater.bench.storage import storage_per_event
from esdb_gater.bench.subscription import gateway_catch_up, raw_ordered_catch_up
from esdb_gater.bench.upcast import measure_upcast_reads
from esdb_gater.shared.tooling.natsserver import NatsCluster, NatsServer, find_nats_server

__all__ = ["main"]

STORE = "bench"
SERVICE = "esdb-stream"
ZERO_SUBJECT = "esdb_gater.bench.zero"
RAW_STREAM = "BENCH-RAW"  # plain stream, like the gateway's log stream
RAW_ATOMIC_STREAM = "BENCH-ATOMIC"  # allow_atomic for the ADR-50 rows
CONCURRENCY = 32
ATOMIC_EVENTS = 10
READ_EVENTS = 1000
TAIL_READ = 100
SMALL_STREAM_EVENTS = 1000
MULTI_STREAMS = (2, 10)  # streams per append_multi transaction
READ_ALL_PAGE = 1000
READ_ALL_TAIL = 100
NOISE_STREAMS = 64


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
    if _bar is not None:
        _bar.row(msg)


class ScenarioProgress:
    """A progress bar over the scenarios of the run, its text the row being measured (the last
    ``log`` line), on stderr and only when stderr is a terminal: CI logs, a redirected stderr and
    the results table on stdout stay exactly as without it. The log lines still go to stderr,
    above the bar."""

    def __init__(self, scenarios: list[str]) -> None:
        self._scenarios = scenarios
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._scenario = ""
        if sys.stderr.isatty():
            console = Console(stderr=True, highlight=False)
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=True,
                redirect_stdout=False,
            )

    def __enter__(self) -> ScenarioProgress:
        global _bar
        if self._progress is not None:
            self._progress.start()
            self._task = self._progress.add_task("scenarios", total=len(self._scenarios))
            _bar = self
        return self

    def __exit__(self, *exc: object) -> None:
        global _bar
        _bar = None
        if self._progress is not None:
            self._progress.stop()

    def start(self, scenario: str) -> None:
        self._scenario = scenario
        self.row("")

    def row(self, text: str) -> None:
        if self._progress is not None and self._task is not None:
            label = f"{self._scenario}: {text}" if text else self._scenario
            self._progress.update(self._task, description=label if len(label) <= 60 else label[:59] + "…")

    def done(self) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task)


_bar: ScenarioProgress | None = None


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def parse_args(argv: list[str], prog: str = "gater-bench") -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="2 s per row instead of 5 (the whole run takes about a minute)")
    p.add_argument("--storage", choices=["file", "memory"], default="file", help="JetStream storage (default file)")
    p.add_argument(
        "--replicas",
        type=int,
        choices=[1, 3],
        default=1,
        help="1: one nats-server (default); 3: a 3-node cluster on loopback, the bench store and the raw "
        "streams with 3 replicas, the services connected to all three nodes",
    )
    p.add_argument(
        "--sync",
        choices=["default", "always"],
        default="default",
        help="JetStream sync_interval of the server(s): default (lazy, fsync every 2 min) or always "
        "(fsync before every acknowledgement)",
    )
    p.add_argument("--duration", type=float, default=None, help="seconds per row (default 5, --quick 2)")
    p.add_argument(
        "--tail-events",
        type=int,
        default=None,
        help="events in the big stream of the tail-read rows (default 100000)",
    )
    p.add_argument(
        "--loop",
        choices=["uvloop", "asyncio"],
        default="uvloop" if _has_uvloop() else "asyncio",
        help="event loop of the benchmark client and the zero-work responder (default uvloop when "
        "installed: the service runs on it too, so raw and gateway clients get the same loop)",
    )
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="S",
        help="first wait up to S seconds for the machine to be idle (other processes < 20 %% of a core)",
    )
    p.add_argument(
        "--instances",
        type=int,
        default=1,
        metavar="N",
        help="stream-service processes in the queue group (default 1)",
    )
    p.add_argument("--json", metavar="FILE", help="also write the numbers to FILE")
    p.add_argument(
        "--profile-service", metavar="FILE", help="run the stream service under cProfile and save its stats to FILE"
    )
    p.add_argument(
        "--profile-channel", metavar="FILE", help="run the channel service under cProfile and save its stats to FILE"
    )
    p.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated scenarios to run (default all: {','.join(SCENARIOS)})",
    )
    args = p.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in args.only if s not in SCENARIOS]
    if unknown or not args.only:
        p.error(f"--only takes any of {','.join(SCENARIOS)}")
    if args.duration is None:
        args.duration = 2.0 if args.quick else 5.0
    if args.tail_events is None:
        args.tail_events = 100_000
    if args.duration <= 0 or args.duration > 600:
        p.error("--duration must be in (0, 600]")
    for path in (args.json, args.profile_service, args.profile_channel):
        if path and not Path(path).resolve().parent.is_dir():
            p.error(f"no such folder for {path}")
    if not 1 <= args.instances <= 8:
        p.error("--instances must be 1..8")
    if args.tail_events < SMALL_STREAM_EVENTS:
        p.error(f"--tail-events must be at least {SMALL_STREAM_EVENTS}")
    return args


# --- set-up -------------------------------------------------------------------------------------
async def _wait_services(nc: Client, services: list[Child], within: float = 30.0) -> None:
    """Until every instance answers ``$SRV.PING.esdb-stream`` (each ping reply has its own id)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    ids: set[str] = set()

    async def on_pong(msg: Any) -> None:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            ids.add(json.loads(msg.data)["id"])

    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, cb=on_pong)
    try:
        while len(ids) < len(services):
            if not all(s.alive() for s in services):
                raise BenchError("the stream service exited during start-up (its log follows)")
            if loop.time() > deadline:
                raise BenchError(f"the stream service did not answer $SRV.PING.{SERVICE} (its log follows)")
            await nc.publish(f"$SRV.PING.{SERVICE}", b"", reply=inbox)
            await asyncio.sleep(0.1)
    finally:
        await sub.unsubscribe()


async def _call(nc: Client, subject: str, body: dict[str, Any], within: float = 10.0) -> dict[str, Any]:
    """A gateway request that must succeed (retried while the endpoint is not subscribed yet)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        try:
            msg = await nc.request(subject, json.dumps(body).encode(), timeout=5.0)
            break
        except NoRespondersError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.05)
    reply: dict[str, Any] = json.loads(msg.data)
    if msg.headers and "Nats-Service-Error-Code" in msg.headers:
        raise BenchError(f"{subject} failed: {reply}")
    return reply


async def _wait_zero(nc: Client, zero: Child, within: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        if not zero.alive():
            raise BenchError(f"the zero-work responder exited:\n{zero.log_tail()}")
        try:
            await nc.request(ZERO_SUBJECT, b"{}", timeout=0.5)
            return
        except (NoRespondersError, NatsTimeoutError):
            if loop.time() > deadline:
                raise BenchError("the zero-work responder does not answer") from None
            await asyncio.sleep(0.05)


async def _raw_streams(nc: Client, storage: str, replicas: int) -> None:
    js = nc.jetstream()
    st = StorageType.MEMORY if storage == "memory" else StorageType.FILE
    common: dict[str, Any] = {"storage": st, "allow_direct": True, "num_replicas": replicas}
    await js.add_stream(StreamConfig(name=RAW_STREAM, subjects=["raw.>"], **common))
    await js.add_stream(StreamConfig(name=RAW_ATOMIC_STREAM, subjects=["rawatomic.>"], allow_atomic=True, **common))


async def _create_store(nc: Client, storage: str, replicas: int, within: float = 60.0) -> None:
    """``store.create`` of the bench store; a new cluster may need a few seconds to elect its
    JetStream meta leader, so retriable refusals are retried until ``within``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    body = {"storage": storage, "replicas": replicas}
    while True:
        try:
            await _call(nc, f"esdb.api.{STORE}.store.create", body, within=10.0)
            return
        except (BenchError, NatsTimeoutError) as exc:
            if loop.time() > deadline:
                raise BenchError(f"could not create the bench store: {exc}") from None
            await asyncio.sleep(0.5)


def _hop_model(raw: Sample, zero: Sample) -> str:
    """If the gateway cost exactly one raw publish plus one zero-work hop (costs add up, in time
    per op), its ratio would be zero/(raw+zero) in ops/s."""
    if raw.ops_s <= 0 or zero.ops_s <= 0:
        return ""
    return f"raw + one hop would give {zero.ops_s / (raw.ops_s + zero.ops_s):.2f}"


def _calls(n: float) -> str:
    return f"{n:.3g} JetStream calls/op"


# --- populating ---------------------------------------------------------------------------------
async def _populate_gateway(nc: Client, stream_id: str, n: int, concurrency: int = 16) -> None:
    """``n`` single-event appends (expected version ANY, so they can be in flight together; the
    service queues them on its per-stream lock): ``n`` commits, like ``n`` sequential appends."""
    subject = f"esdb.api.{STORE}.stream.append"
    body = json.dumps({"stream_id": stream_id, "expected_version": -2, "events": [event_json()]}).encode()
    left = n

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            msg = await nc.request(subject, body, timeout=10.0)
            if msg.headers and "Nats-Service-Error-Code" in msg.headers:
                raise BenchError(f"populating {stream_id}: {msg.data[:300]!r}")

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def _populate_raw(nc: Client, subject: str, n: int) -> None:
    pipe = await Pipeline(nc).start()
    payload = json.dumps(event_json(), separators=(",", ":")).encode()
    for _ in range(n):
        await pipe.publish(subject, payload)
    await pipe.finish()


async def _populate_tail(nc: Client, big: int) -> float:
    """Write the tail-read streams straight to the log, exactly as the service stores one-event
    appends (``esdb.log.<store>.e.<stream>``, headers Esdb-Version/Esdb-Count, msgpack body).
    Both streams get the same density: each of their events is followed by one event of one of
    64 noise streams. The big stream is written first, then the 1k stream, so both tails are
    recent and the two reads differ only in how many commits the seek has to search."""
    started = time.perf_counter()
    pipe = await Pipeline(nc).start()
    root = f"esdb.log.{STORE}.e."
    noise_v = [0] * NOISE_STREAMS
    j = 0
    for sid, n in (("tail-big", big), ("tail-1k", SMALL_STREAM_EVENTS)):
        subject = root + sid
        for i in range(n):
            await pipe.publish(subject, commit_payload(i), commit_headers(i))
            k = j % NOISE_STREAMS
            j += 1
            v = noise_v[k]
            noise_v[k] = v + 1
            await pipe.publish(root + f"noise-{k}", commit_payload(v), commit_headers(v))
    await pipe.finish(within=180)
    return time.perf_counter() - started


# --- the scenarios --------------------------------------------------------------------------------
class Ctx:
    def __init__(self, args: argparse.Namespace, nc: Client, report: Report) -> None:
        self.args = args
        self.nc = nc
        self.js = nc.jetstream()
        self.d = float(args.duration)
        self.report = report
        self.errs = Errors()

    def check(self, c: Check) -> Check:
        self.report.checks.append(c)
        return c

    async def js_calls(self, op: Any, n: int = 20) -> float:
        """JetStream requests the service makes per gateway op, counted in an untimed pass: the
        client subscribes to ``$JS.API.>`` and the store's log subjects (core NATS hands it a copy
        of every request and publish the service sends) while ``op`` runs ``n`` times."""
        seen = 0

        async def count(msg: Any) -> None:
            nonlocal seen
            if msg.reply:  # requests and acknowledged publishes, not replies
                seen += 1

        subs = [
            await self.nc.subscribe("$JS.API.>", cb=count),
            await self.nc.subscribe(f"esdb.log.{STORE}.>", cb=count),
            await self.nc.subscribe(f"esdb.ix.{STORE}.>", cb=count),
        ]
        try:
            await self.nc.flush()
            for _ in range(n):
                await op()
            await self.nc.flush()
            await asyncio.sleep(0.05)
        finally:
            for sub in subs:
                await sub.unsubscribe()
        return seen / n


async def scenario_seq(x: Ctx) -> None:
    log("single-event append, sequential")
    nc, d, errs = x.nc, x.d, x.errs
    gw = GatewayAppend(nc, STORE, "seq-1", 1, errs)
    s_gw = await sequential(gw, d, warmup=50, errors=errs)
    s_raw = await sequential(RawAppend(nc, "raw.e.seq-1", errs), d, warmup=50, errors=errs)
    s_zero = await sequential(ZeroCall(nc, ZERO_SUBJECT, gw.body(), errs), d, warmup=50, errors=errs)
    calls = await x.js_calls(gw)
    c = x.check(Check("single append, sequential", s_gw.ops_s / s_raw.ops_s, ">=", 0.35))
    sc = "1-event append, sequential"
    x.report.rows += [
        Row(sc, "gateway", s_gw, c.fmt(), c.target_cell(), f"{_calls(calls)}; {_hop_model(s_raw, s_zero)}"),
        Row(sc, "raw JetStream publish + expected seq", s_raw),
        Row(sc, "zero-work hop (request/reply floor)", s_zero),
    ]


async def scenario_conc(x: Ctx) -> None:
    log(f"single-event append, {CONCURRENCY} concurrent streams")
    nc, d, errs = x.nc, x.d, x.errs
    gws = [GatewayAppend(nc, STORE, f"conc-{i}", 1, errs) for i in range(CONCURRENCY)]
    s_gw = await concurrent(gws, d, warmup=5, errors=errs)
    raws = [RawAppend(nc, f"raw.e.conc-{i}", errs) for i in range(CONCURRENCY)]
    s_raw = await concurrent(raws, d, warmup=5, errors=errs)
    zs = [ZeroCall(nc, ZERO_SUBJECT, gws[0].body(), errs) for _ in range(CONCURRENCY)]
    s_zero = await concurrent(zs, d, warmup=5, errors=errs)
    calls = await x.js_calls(gws[0])
    c = x.check(Check(f"single append, {CONCURRENCY} concurrent", s_gw.ops_s / s_raw.ops_s, ">=", 0.5))
    sc = f"1-event append, {CONCURRENCY} streams concurrently"
    x.report.rows += [
        Row(sc, "gateway", s_gw, c.fmt(), c.target_cell(), f"{_calls(calls)}; {_hop_model(s_raw, s_zero)}"),
        Row(sc, "raw JetStream publish + expected seq", s_raw),
        Row(sc, "zero-work hop (request/reply floor)", s_zero),
    ]


async def scenario_conc2(x: Ctx) -> None:
    """The conc row again with one more stream-service process in the queue group, as
    ``gater serve stream --instances 2`` runs it (the default run: 1 vs 2 instances)."""
    n = int(x.args.instances)
    log(f"single-event append, {CONCURRENCY} concurrent streams, {n} vs {n + 1} stream-service instances")
    nc, d, errs = x.nc, x.d, x.errs
    gws = [GatewayAppend(nc, STORE, f"conc2-{i}", 1, errs) for i in range(CONCURRENCY)]
    s_one = await concurrent(gws, d, warmup=5, errors=errs)
    url = nc.connected_url.geturl() if nc.connected_url else ""
    extra = service_child(url)
    extra.start()
    try:
        await _wait_services(nc, [extra] * (n + 1))  # every instance answers $SRV.PING, the new one too
        s_two = await concurrent(gws, d, warmup=5, errors=errs)
    finally:
        await asyncio.to_thread(extra.stop)
        extra.cleanup()
    raws = [RawAppend(nc, f"raw.e.conc2-{i}", errs) for i in range(CONCURRENCY)]
    s_raw = await concurrent(raws, d, warmup=5, errors=errs)
    c = x.check(
        Check(f"single append, {CONCURRENCY} concurrent, {n + 1} instances", s_two.ops_s / s_raw.ops_s, ">=", 0.5)
    )
    sc = f"1-event append, {CONCURRENCY} streams, {n} vs {n + 1} service instances"
    gain = (
        f"{s_two.ops_s / s_one.ops_s:.2f}x {n} instance(s); the added instance's CPU is under other"
        if s_one.ops_s
        else ""
    )
    x.report.rows += [
        Row(sc, f"gateway, {n} instance(s)", s_one, f"{s_one.ops_s / s_raw.ops_s:.2f}"),
        Row(sc, f"gateway, {n + 1} instances", s_two, c.fmt(), c.target_cell(), gain),
        Row(sc, "raw JetStream publish + expected seq", s_raw),
    ]


async def scenario_atomic(x: Ctx) -> None:
    log(f"{ATOMIC_EVENTS}-event atomic append, sequential")
    nc, d, errs = x.nc, x.d, x.errs
    gw = GatewayAppend(nc, STORE, "atomic-1", ATOMIC_EVENTS, errs)
    s_gw = await sequential(gw, d, warmup=20, events_per_op=ATOMIC_EVENTS, errors=errs)
    raw = RawAtomicBatch(nc, "rawatomic.e.atomic-1", ATOMIC_EVENTS, errs)
    s_raw = await sequential(raw, d, warmup=10, events_per_op=ATOMIC_EVENTS, errors=errs)
    calls = await x.js_calls(gw)
    c = x.check(Check("10-event atomic append", s_gw.ops_s / s_raw.ops_s, ">=", 2.0))
    sc = f"{ATOMIC_EVENTS}-event atomic append, sequential"
    x.report.rows += [
        Row(sc, "gateway (one commit message)", s_gw, c.fmt(), c.target_cell(), _calls(calls)),
        Row(sc, "raw ADR-50 atomic batch", s_raw),
    ]


async def scenario_multi(x: Ctx) -> None:
    """stream.append_multi (issue 12): one event on each of n streams with exact expected
    versions, atomically; against the same events as n single appends one after the other (not
    atomic) and the raw ADR-50 batch of one message per subject with its expectation."""
    nc, d, errs = x.nc, x.d, x.errs
    for n in MULTI_STREAMS:
        log(f"{n}-stream append_multi, sequential")
        gw = GatewayAppendMulti(nc, STORE, [f"multi{n}-{i}" for i in range(n)], errs)
        s_gw = await sequential(gw, d, warmup=20, events_per_op=n, errors=errs)
        singles = SingleAppends(nc, STORE, [f"single{n}-{i}" for i in range(n)], errs)
        s_single = await sequential(singles, d, warmup=5, events_per_op=n, errors=errs)
        raw = RawMultiBatch(nc, RAW_ATOMIC_STREAM, [f"rawatomic.m{n}.{i}" for i in range(n)], errs)
        s_raw = await sequential(raw, d, warmup=10, events_per_op=n, errors=errs)
        calls = await x.js_calls(gw)
        sc = f"{n}-stream transaction, 1 event per stream, sequential"
        ratio = f"{s_gw.ops_s / s_raw.ops_s:.2f}" if s_raw.ops_s else ""
        single_ratio = f"{s_single.ops_s / s_raw.ops_s:.2f}" if s_raw.ops_s else ""
        x.report.rows += [
            Row(sc, "gateway append_multi (one ADR-50 batch)", s_gw, ratio, "", f"{_calls(calls)}; vs raw batch"),
            Row(sc, f"gateway, {n} single appends one after the other", s_single, single_ratio, "", "not atomic"),
            Row(sc, "raw ADR-50 batch, one message per subject + expected seq", s_raw),
        ]


async def scenario_readall(x: Ctx) -> None:
    """stream.read_all pages (issue 12): 1000 events forward from a notification id, and the
    newest 100 backward, against a raw batched Direct Get of 1000 messages."""
    nc, d, errs = x.nc, x.d, x.errs
    log(f"read_all pages (populating {READ_ALL_PAGE} events)")
    await _populate_gateway(nc, "readall-src", READ_ALL_PAGE)
    await _populate_raw(nc, "raw.e.readall", READ_ALL_PAGE)
    subject = f"esdb.api.{STORE}.stream.read_all"
    newest = await _call(nc, subject, {"direction": "backward", "limit": READ_ALL_PAGE})
    start = newest["events"][-1]["notification_id"]
    log(f"read_all: {READ_ALL_PAGE} forward, {READ_ALL_TAIL} backward")
    fwd = GatewayRead(nc, subject, {"from": start, "limit": READ_ALL_PAGE}, READ_ALL_PAGE, errs)
    s_fwd = await sequential(fwd, d, warmup=3, events_per_op=READ_ALL_PAGE, errors=errs)
    calls = await x.js_calls(fwd, 5)
    back = GatewayRead(nc, subject, {"direction": "backward", "limit": READ_ALL_TAIL}, READ_ALL_TAIL, errs)
    s_back = await sequential(back, d, warmup=5, events_per_op=READ_ALL_TAIL, errors=errs)
    calls_back = await x.js_calls(back, 10)
    direct = await DirectBatchRead(nc, RAW_STREAM, "raw.e.readall", READ_ALL_PAGE, errs).start()
    s_direct = await sequential(direct, d, warmup=3, events_per_op=READ_ALL_PAGE, errors=errs)
    ratio = f"{s_fwd.ops_s / s_direct.ops_s:.2f}" if s_direct.ops_s else ""
    sc = "read_all page"
    x.report.rows += [
        Row(sc, f"gateway, {READ_ALL_PAGE} forward from an id", s_fwd, ratio, "", f"{_calls(calls)}; vs raw"),
        Row(sc, f"gateway, newest {READ_ALL_TAIL} backward", s_back, "", "", _calls(calls_back)),
        Row(sc, f"raw batched Direct Get of {READ_ALL_PAGE}", s_direct),
    ]


async def scenario_forward(x: Ctx) -> None:
    log(f"forward read of {READ_EVENTS} events (populating)")
    nc, d, errs = x.nc, x.d, x.errs
    await _populate_gateway(nc, "read-1k", READ_EVENTS)
    await _populate_raw(nc, "raw.e.read-1k", READ_EVENTS)
    log(f"forward read of {READ_EVENTS} events")
    gr = GatewayRead(
        nc,
        f"esdb.api.{STORE}.stream.forward",
        {"stream_id": "read-1k", "start_version": 0, "count": READ_EVENTS},
        READ_EVENTS,
        errs,
    )
    s_gw = await sequential(gr, d, warmup=3, events_per_op=READ_EVENTS, errors=errs)
    if [e["version"] for e in gr.last] != list(range(READ_EVENTS)):
        raise BenchError("gateway forward read returned the wrong versions")
    calls = await x.js_calls(gr, 5)
    direct = await DirectBatchRead(nc, RAW_STREAM, "raw.e.read-1k", READ_EVENTS, errs).start()
    s_direct = await sequential(direct, d, warmup=3, events_per_op=READ_EVENTS, errors=errs)
    ordered = OrderedConsumerRead(x.js, RAW_STREAM, "raw.e.read-1k", READ_EVENTS, errs)
    s_ordered = await sequential(ordered, d, warmup=3, events_per_op=READ_EVENTS, errors=errs)
    best = max(s_direct.ops_s, s_ordered.ops_s)
    c = x.check(Check("forward read 1000", s_gw.ops_s / best, ">=", 0.5))
    faster = "batched Direct Get" if s_direct.ops_s >= s_ordered.ops_s else "ordered consumer"
    sc = f"forward read of {READ_EVENTS} events"
    x.report.rows += [
        Row(sc, "gateway", s_gw, c.fmt(), c.target_cell(), f"{_calls(calls)}; vs the faster raw ({faster})"),
        Row(sc, "raw batched Direct Get (ADR-31)", s_direct),
        Row(sc, "raw ordered consumer", s_ordered),
    ]


async def scenario_tail(x: Ctx) -> None:
    nc, d, errs = x.nc, x.d, x.errs
    big = int(x.args.tail_events)
    log(f"tail read: populating a {big:,}-event stream, a 1k-event stream and {NOISE_STREAMS} noise streams")
    took = await _populate_tail(nc, big)
    total = 2 * (big + SMALL_STREAM_EVENTS)
    log(f"populated {total:,} log messages in {took:.1f} s ({total / took:,.0f} msgs/s)")
    x.report.meta["tail_populate_s"] = round(took, 2)
    for sid, n in (("tail-big", big), ("tail-1k", SMALL_STREAM_EVENTS)):
        v = (await _call(nc, f"esdb.api.{STORE}.stream.version", {"stream_id": sid}))["version"]
        if v != n - 1:
            raise BenchError(f"{sid} is at version {v}, expected {n - 1}")
    log(f"tail read of {TAIL_READ} events")
    backward = f"esdb.api.{STORE}.stream.backward"
    body = {"start_version": -1, "count": TAIL_READ}
    small = GatewayRead(nc, backward, {"stream_id": "tail-1k", **body}, TAIL_READ, errs)
    s_small = await sequential(small, d, warmup=5, events_per_op=TAIL_READ, errors=errs)
    large = GatewayRead(nc, backward, {"stream_id": "tail-big", **body}, TAIL_READ, errs)
    s_large = await sequential(large, d, warmup=5, events_per_op=TAIL_READ, errors=errs)
    for op, n in ((small, SMALL_STREAM_EVENTS), (large, big)):
        got = [e["version"] for e in op.last]
        if got != list(range(n - 1, n - 1 - TAIL_READ, -1)):
            raise BenchError(f"tail read returned versions {got[:3]}…{got[-3:]}, expected {n - 1}…{n - TAIL_READ}")
    calls_small = await x.js_calls(small, 10)
    calls_large = await x.js_calls(large, 10)
    big_label = f"{big // 1000}k" if big % 1000 == 0 else f"{big:,}"
    c = x.check(Check(f"tail read, {big_label} vs 1k (p50 ratio)", s_large.p50 / s_small.p50, "<=", 2.0))
    sc = f"tail read of {TAIL_READ} events (backward from -1)"
    quick_note = f" ({big_label} instead of 100k)" if big < 100_000 else ""
    x.report.rows += [
        Row(sc, "gateway, 1k-event stream", s_small, "", "", f"{_calls(calls_small)}; 1 noise commit per event"),
        Row(
            sc,
            f"gateway, {big_label}-event stream{quick_note}",
            s_large,
            f"{c.fmt()} (p50 {big_label} ÷ 1k)",
            c.target_cell(),
            f"{_calls(calls_large)}; log: {total:,} msgs, {NOISE_STREAMS} noise streams interleaved 1:1",
        ),
    ]


async def scenario_readcost(x: Ctx) -> None:
    """Reads that ignore commit size (issue 11); see esdb_gater.bench.readcost."""
    big = int(x.args.tail_events)
    log(f"read cost: populating {big:,}-event and 1k-event streams in appends of 1, 50 and 500")
    window = min(x.d, 1.0)  # 36 windows: keep the row under a minute
    rows, checks, took = await read_cost(x.nc, STORE, big, window, x.errs)
    log(f"read cost: done (the streams took {took:.1f} s to write)")
    x.report.meta["readcost_populate_s"] = round(took, 2)
    for c in checks:
        x.check(c)
    x.report.rows += rows


async def scenario_sub(x: Ctx) -> None:
    """Subscription catch-up (issue 3): delivery of a stored stream to an acking subscriber."""
    n = 5_000 if x.args.quick else 20_000
    log(f"subscription catch-up of {n:,} events (populating)")
    pipe = await Pipeline(x.nc).start()
    subject = f"esdb.log.{STORE}.e.sub-src"
    for i in range(n):
        await pipe.publish(subject, commit_payload(i), commit_headers(i))
    await pipe.finish(within=120)
    for _ in range(100):
        try:
            await x.nc.request("$SRV.PING.esdb-subscription", b"", timeout=0.5)
            break
        except (NatsTimeoutError, NoRespondersError):
            await asyncio.sleep(0.2)
    log("subscription catch-up")
    # three rounds, interleaved, the best of each path: one catch-up is a fraction of a second,
    # so a single one mostly measures what else the machine did at that moment
    runs: dict[str, list[Sample]] = {"gw": [], "json": [], "msgpack": [], "raw": []}
    for _ in range(3):
        check_stop()
        runs["gw"].append(await gateway_catch_up(x.nc, STORE, "sub-src", n))
        runs["json"].append(await gateway_catch_up(x.nc, STORE, "sub-src", n, batch=True))
        runs["msgpack"].append(await gateway_catch_up(x.nc, STORE, "sub-src", n, batch=True, codec="msgpack"))
        runs["raw"].append(await raw_ordered_catch_up(x.nc, f"esdb-log-{STORE}", subject, n))
    s_gw, s_json, s_batch, s_raw = (max(runs[k], key=lambda s: s.events_s) for k in ("gw", "json", "msgpack", "raw"))
    ratio = s_gw.events_s / s_raw.events_s if s_raw.events_s else float("nan")
    json_ratio = s_json.events_s / s_raw.events_s if s_raw.events_s else float("nan")
    batch_ratio = s_batch.events_s / s_raw.events_s if s_raw.events_s else float("nan")
    # like for like: the raw consumer decodes msgpack, so does this subscriber
    c = x.check(Check("subscription catch-up, batch delivery (msgpack) ÷ raw", batch_ratio, ">=", 0.50))
    sc = f"subscription catch-up of {n:,} events"
    x.report.rows += [
        Row(
            sc,
            "gateway (subscription service, native ack per event)",
            s_gw,
            f"{ratio:.2f}",
            "",
            "one NATS message per event to the subscriber; acked JetStream commit per event",
        ),
        Row(
            sc,
            "gateway (delivery batch of 100, JSON, one native ack per batch)",
            s_json,
            f"{json_ratio:.2f}",
            "",
            "one NATS message per 100 events; one JetStream ack (ack policy all) per batch",
        ),
        Row(
            sc,
            "gateway (delivery batch of 100, msgpack, one native ack per batch)",
            s_batch,
            c.fmt(),
            c.target_cell(),
            "as above, the body in msgpack (the raw consumer decodes msgpack too)",
        ),
        Row(sc, "raw ordered consumer (msgpack decode)", s_raw, note="each row: the best of 3 interleaved runs"),
    ]


async def _wait_for(x: Ctx, service: str) -> None:
    for _ in range(150):
        try:
            await x.nc.request(f"$SRV.PING.esdb-{service}", b"", timeout=0.5)
            return
        except (NatsTimeoutError, NoRespondersError):
            await asyncio.sleep(0.2)
    raise BenchError(f"the {service} service did not answer $SRV.PING")


async def scenario_upcast(x: Ctx) -> None:
    await _wait_for(x, "schema")
    log("forward read of 1000 events: 3-step upcaster chain vs none")
    x.report.rows += (await measure_upcast_reads(x.nc, STORE, x.d, errors=x.errs)).rows()


async def scenario_link(x: Ctx) -> None:
    await _wait_for(x, "link")
    log("link forwarding")
    r = await link_forwarding(x.args.url, events=5_000 if x.args.quick else 20_000)
    sc = "link forwarding"
    x.report.rows += [
        Row(sc, "backfill", value=f"{r['backfill_events_per_s']:,.0f} events/s"),
        Row(
            sc,
            "live",
            value=f"{r['live_events_per_s']:,.0f} events/s",
            note=f"client appends {r['append_events_per_s']:,.0f}/s; "
            f"done {r['live_lag_after_last_append_s'] * 1000:.0f} ms after the last",
        ),
    ]


async def scenario_cause(x: Ctx) -> None:
    await _wait_for(x, "causation")
    log("causation chain lookups")
    r = await chain_lookup(x.args.url, sizes=(1_000, 10_000 if x.args.quick else 100_000))
    c = x.check(Check("causation chain, large vs 1k (p50 ratio)", r["ratio_p50"], "<=", 2.0))
    rows = [
        Row("causation chain (depth 10)", f"{int(row['events']):,} events", value=f"p50 {row['p50_ms']:.2f} ms")
        for row in r["rows"]
    ]
    rows[-1].ratio = c.fmt()
    rows[-1].target = c.target_cell()
    x.report.rows += rows


async def scenario_storage(x: Ctx) -> None:
    """Bytes stored per event, log + indexes, against the event's JSON (issue 11); see esdb_gater.bench.storage."""
    n = 4_000
    log(f"storage per event: {n:,} events per variant, then STREAM.INFO of the log and index streams")
    dirs = [Path(d) for d in getattr(x.args, "nats_dirs", [])] if x.args.storage == "file" else []
    cfg = {"storage": x.args.storage, "replicas": x.args.replicas}
    rows, checks, meta = await storage_per_event(x.nc, n, dirs, cfg)
    for c in checks:
        x.check(c)
    x.report.rows += rows
    x.report.meta["storage_per_event"] = meta


async def scenario_channel(x: Ctx) -> None:
    for _ in range(150):
        try:
            await x.nc.request("esdb.api._.channel.list", b"{}", timeout=0.5)
            break
        except (NatsTimeoutError, NoRespondersError):
            await asyncio.sleep(0.2)
    log("channel publish -> deliver, HMAC on / off, vs raw core request-reply")
    r = await channel_vs_raw(x.nc, duration=x.d, concurrency=CONCURRENCY, zero_subject=ZERO_SUBJECT)
    raw = r["raw_request_reply"].ops_s
    sc = f"channel publish → deliver ({CONCURRENCY} concurrent)"
    x.report.rows += [
        Row(sc, "gateway, HMAC-signed", r["channel_hmac"], f"{r['channel_hmac'].ops_s / raw:.2f}" if raw else ""),
        Row(sc, "gateway, unsigned", r["channel_plain"], f"{r['channel_plain'].ops_s / raw:.2f}" if raw else ""),
        Row(sc, "raw core request-reply", r["raw_request_reply"]),
    ]


async def scenario_peer(x: Ctx) -> None:
    """The optional peer row (issue 11): the ``eventsourcing`` library's PostgreSQL recorder against
    ``eventsourcing_gater`` in the same run, when ``ESDB_BENCH_PG_DSN`` names a PostgreSQL (see
    esdb_gater.bench.eventsourcing, which runs the same rows on its own)."""
    dsn = os.environ.get("ESDB_BENCH_PG_DSN")
    if not dsn:
        x.report.notes.append("peer rows skipped: set ESDB_BENCH_PG_DSN=postgresql://user:password@host:port/db")
        return
    try:  # imported here: the eventsourcing extra and psycopg are optional
        import psycopg  # type: ignore[import-not-found,unused-ignore]  # noqa: F401

        from esdb_gater.bench import eventsourcing as es
    except ImportError as exc:
        x.report.notes.append(f"peer rows skipped: {exc} (pip install -e '.[eventsourcing]' 'eventsourcing[postgres]')")
        return
    saves = 200 if x.args.quick else 500
    u = x.nc.connected_url
    url = f"nats://{u.hostname}:{u.port}" if u is not None else "nats://127.0.0.1:4222"
    gater_env = {
        "PERSISTENCE_MODULE": "eventsourcing_gater",
        "ESDB_GATER_NATS_URL": url,
        "ESDB_GATER_STORE": f"peer-{os.getpid()}",
    }
    pg = es.pg_env(dsn, 32)
    assert pg is not None
    log(f"peer: eventsourcing saves through the gateway and through PostgreSQL ({saves} per row)")
    ours = await asyncio.to_thread(es.run_module, "eventsourcing_gater", gater_env, saves, 32, log)
    theirs = await asyncio.to_thread(es.run_module, "eventsourcing.postgres", pg, saves, 32, log)
    for a, b in zip(ours, theirs, strict=True):
        scenario = f"eventsourcing save, {a.what} event(s), {a.threads} thread(s)"
        ratio = a.per_s / b.per_s if b.per_s else float("nan")
        target = {("1", 1): 5.0, ("10", 1): 2.0}.get((a.what, a.threads))
        cell = ""
        if target is not None:
            c = x.check(Check(f"{scenario}: gateway ÷ PostgreSQL", ratio, ">=", target))
            cell = c.target_cell()
        x.report.rows += [
            Row(
                scenario,
                "eventsourcing_gater",
                None,
                f"{ratio:.2f}",
                cell,
                "ratio: saves/s ÷ PostgreSQL's",
                value=f"{a.per_s:,.0f} saves/s, p50 {a.p50_ms:.2f} ms",
            ),
            Row(
                scenario, "eventsourcing.postgres (peer)", None, value=f"{b.per_s:,.0f} saves/s, p50 {b.p50_ms:.2f} ms"
            ),
        ]


SCENARIOS = {
    "seq": scenario_seq,
    "conc": scenario_conc,
    "conc2": scenario_conc2,
    "atomic": scenario_atomic,
    "multi": scenario_multi,
    "forward": scenario_forward,
    "readall": scenario_readall,
    "tail": scenario_tail,
    "readcost": scenario_readcost,
    "sub": scenario_sub,
    "upcast": scenario_upcast,
    "link": scenario_link,
    "cause": scenario_cause,
    "storage": scenario_storage,
    "channel": scenario_channel,
    "peer": scenario_peer,
}


# --- the run ------------------------------------------------------------------------------------
async def run(
    args: argparse.Namespace, url: str, server_pids: list[int], services: list[Child], zero: Child, report: Report
) -> None:
    # SIGTERM cancels this task (Ctrl-C does the same through asyncio's runner), so the
    # cancellation unwinds every await cleanly instead of surfacing in a random callback.
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None

    def on_signal() -> None:
        request_stop()
        task.cancel()

    signals = [signal.SIGTERM]
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # ignored: we run in the background
        signals.append(signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, on_signal)
    set_meter(
        CpuMeter(
            {
                "client": [os.getpid()],
                "service": [s.pid for s in services] + list(getattr(args, "extra_service_pids", [])),
                "nats-server": server_pids,
                "zero-work": [zero.pid],
            }
        )
    )
    nc = await nats.connect(
        servers=url.split(","), name="bench-client", max_reconnect_attempts=2, pending_size=64 * 1024 * 1024
    )
    try:
        await _wait_services(nc, services)
        service = services[0]
        await _create_store(nc, args.storage, args.replicas)
        await _wait_zero(nc, zero)
        await asyncio.sleep(0.5)
        rss_start = rss_mb(service.pid)
        await _raw_streams(nc, args.storage, args.replicas)
        x = Ctx(args, nc, report)
        with ScenarioProgress(args.only) as bar:
            for name in args.only:
                check_stop()
                bar.start(name)
                await SCENARIOS[name](x)
                bar.done()

        # idle RSS of the service, once it has settled after the load
        await asyncio.sleep(1.0)
        rss_end = rss_mb(service.pid)
        report.meta["rss_mb_all_instances_after_run"] = [rss_mb(s.pid) for s in services]
        end = rss_end if rss_end is not None else float("nan")
        c = x.check(Check("idle RSS of the stream service (MB)", end, "<", 80.0))
        start_txt = f"{rss_start:.1f} MB" if rss_start is not None else "?"
        report.rows.append(
            Row(
                "idle RSS of the stream-service process",
                "VmRSS after start / idle after the run"
                + (f" (instance 1 of {len(services)})" if len(services) > 1 else ""),
                value=f"{start_txt} / {end:.1f} MB",
                target=c.target_cell(),
                note="target checked on the after-run value",
            )
        )
        report.meta["rss_mb"] = {"after_start": rss_start, "after_run": rss_end}
        if x.errs.count:
            report.notes.append(f"{x.errs.count} failed operations (first: {x.errs.samples[:3]})")
    finally:
        set_meter(None)
        with contextlib.suppress(Exception):
            await nc.close()
        for sig in signals:
            loop.remove_signal_handler(sig)
        signal.signal(signal.SIGTERM, _on_sigterm)


def _versions() -> dict[str, str]:
    try:
        out = subprocess.run([find_nats_server(), "--version"], capture_output=True, text=True, timeout=10).stdout
        nats_server = out.strip().split()[-1]
    except Exception:
        nats_server = "?"
    return {
        "nats_server": nats_server,
        "nats_py": dist_version("nats-py"),
        "python": platform.python_version(),
    }


def _commit() -> str:
    """The project's git commit (``+dirty`` when shared/ or services/ have local changes)."""
    try:
        root = str(Path(__file__).resolve().parent.parent)
        head = subprocess.run(
            ["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "--", "shared", "services"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
    return (head or "?") + ("+dirty" if dirty else "")


def _machine() -> str:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cores} cores{' (' + model + ')' if model else ''}, {platform.system()} {platform.release()}"


def _command(argv: list[str], prog: str) -> str:
    return " ".join([prog, *argv])


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM outside the event loop (start-up): unwind like Ctrl-C."""
    raise KeyboardInterrupt


def _wait_quiet(limit: float) -> float:
    """Background load (% of one core), after waiting up to ``limit`` s for it to fall below 20 %."""
    deadline = time.monotonic() + limit
    load = background_load()
    while load >= 20.0 and time.monotonic() < deadline:
        log(f"machine busy ({load:.0f} % of a core used by other processes); waiting")
        time.sleep(2.0)
        load = background_load()
    return load


def main(argv: list[str] | None = None, prog: str = "gater-bench") -> int:
    """The ``gater-bench`` console script. ``prog``: how the benchmark was invoked (``gater bench``
    and ``python -m esdb_gater.bench`` pass their own), for the usage line and the report's command line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv, prog)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        load = _wait_quiet(args.wait_quiet)
    except KeyboardInterrupt:
        signal.signal(signal.SIGTERM, previous)
        return 130
    report = Report(
        meta={
            "command": _command(argv, prog),
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": _machine(),
            "commit": _commit(),
            **_versions(),
            "storage": args.storage,
            "replicas": args.replicas,
            "sync": args.sync,
            "client_loop": args.loop,
            "background_load_pct_of_one_core": load,
            "duration_s": args.duration,
            "tail_events": args.tail_events,
            "concurrency": CONCURRENCY,
            "service_instances": args.instances,
            "scenarios": args.only,
        }
    )
    server: NatsServer | NatsCluster | None = None
    children: list[Child] = []
    started = time.perf_counter()
    rc = 0
    sync_always = args.sync == "always"
    try:
        what = f"{args.storage} storage, sync_interval {args.sync}"
        if args.replicas > 1:
            log(f"starting a {args.replicas}-node nats-server cluster ({what}), stream service, zero-work responder")
            server = NatsCluster(args.replicas, sync_always=sync_always).start()
            nodes = server.nodes
        else:
            log(f"starting nats-server ({what}), stream service, zero-work responder")
            server = NatsServer(port=0, name="esdb-bench", sync_always=sync_always).start()
            nodes = [server]
        url = ",".join(n.url for n in nodes)  # the services and the client know every node
        server_pids = [n.proc.pid for n in nodes if n.proc is not None]
        services = []
        for i in range(args.instances):
            child = service_child(url, args.profile_service if i == 0 else None)
            children.append(child)
            services.append(child.start())
        args.extra_service_pids = []
        args.url = url
        args.nats_dirs = [str(n.data_dir) for n in nodes]
        extra = {"sub": "subscription", "upcast": "schema", "link": "link", "cause": "causation"}
        if "storage" in args.only and "cause" not in args.only:
            extra["storage"] = "causation"  # the causation indexer writes part of what is measured
        for scenario, service in extra.items():
            if scenario in args.only:
                child = service_child(url, service=service)
                children.append(child)
                args.extra_service_pids.append(child.start().pid)
        if "channel" in args.only:
            ch = channel_child(url, profile_to=args.profile_channel)
            children.append(ch)
            args.extra_service_pids.append(ch.start().pid)
        zero = zero_child(url, ZERO_SUBJECT, args.loop)
        children.append(zero)
        zero.start()
        if args.loop == "uvloop":
            import uvloop

            uvloop.run(run(args, url, server_pids, services, zero, report))
        else:
            asyncio.run(run(args, url, server_pids, services, zero, report))
    except (KeyboardInterrupt, asyncio.CancelledError, Interrupted):
        log("interrupted: stopping everything")
        rc = 130
    except BenchError as exc:
        log(f"aborted: {exc}")
        rc = 1
    finally:
        # Stopping is bounded (SIGTERM, then SIGKILL after a grace period): do not let a second
        # Ctrl-C cut it short and leave processes behind.
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for child in reversed(children):  # zero-work responder, then the service (drains)
            code = child.stop()
            if rc == 1 and child.name == "stream-service":
                tail = child.log_tail(20)
                if tail:
                    log(f"stream service log (exit {code}):\n{tail}")
            child.cleanup()
        if server is not None:
            server.cleanup()
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, old_int)
    if rc != 0:
        return rc
    report.meta["wall_s"] = round(time.perf_counter() - started, 1)
    print()
    print(report.header())
    print()
    print(report.markdown())
    print()
    print("CPU during each timed window, % of one core (the machine has", os.cpu_count(), "cores):")
    print()
    print(report.markdown_cpu())
    print()
    for chk in report.checks:
        print(f"- {chk.name}: {chk.fmt()} (target {chk.target_cell()})")
    for note in report.notes:
        print(f"- note: {note}")
    print(f"- whole run: {report.meta['wall_s']} s")
    if args.profile_service:
        print(f"- service profile written to {args.profile_service} (python -m pstats {args.profile_service})")
    if args.profile_channel:
        print(f"- channel service profile written to {args.profile_channel} (python -m pstats {args.profile_channel})")
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_json(), indent=2) + "\n")
        print(f"- numbers written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m esdb_gater.bench"))
