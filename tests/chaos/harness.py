"""The fault-injection harness: a real 3-node nats-server cluster on loopback, the gateway's
services as separate processes (so ``kill -9`` is real), clients with the retry policy, and a
ledger that checks what the clients were told against what the store holds.

Everything it starts is stopped by its own pid; every service process also dies with the test
process (``PR_SET_PDEATHSIG``), so an interrupted run leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client

from esdb_gater.shared.client import GaterClient
from esdb_gater.shared.client.retry import RetryConfig
from esdb_gater.shared.core.errors import GatewayError
from esdb_gater.shared.core.telemetry import attach, detach
from esdb_gater.shared.log import jetstream
from esdb_gater.shared.tooling.natsserver import NatsCluster, NatsServer

ROOT = Path(__file__).resolve().parents[2]
STORE = "chaos"
# The client's retry policy, shortened from the defaults (100 ms / 30 s / 10) so a run stays
# short; a Raft election after a kill -9 takes a few seconds, and this rides through ~60 s.
RETRY = RetryConfig(base_delay_ms=50, max_delay_ms=2_000, max_retries=40)
CLIENT_TIMEOUT_S = 3.0  # per attempt; longer than the services' JetStream timeout below
SERVICE_JS_TIMEOUT_S = "2"


def log(msg: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class ServiceProc:
    """``python -m esdb_gater.cli serve SERVICE --nats URL1,URL2,URL3`` in its own process."""

    def __init__(self, service: str, url: str, index: int) -> None:
        self.service = service
        self.url = url
        self.name = f"{service}-{index}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix=f"chaos-{self.name}-", suffix=".log", delete=False)  # noqa: SIM115
        self.log_path = Path(self._log.name)
        self.kills = 0

    def start(self) -> ServiceProc:
        env = dict(os.environ)
        for key in list(env):
            if key.startswith("OTEL_EXPORTER_OTLP"):
                del env[key]
        env.update(
            {
                "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p),
                "ESDB_GATER_AUTO_CREATE_STORES": "true",
                "ESDB_GATER_DEFAULT_STORE__REPLICAS": "3",
                "ESDB_GATER_REQUEST_TIMEOUT_S": SERVICE_JS_TIMEOUT_S,
                "ESDB_GATER_LEASE_TTL_S": "2",
            }
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "esdb_gater.cli", "serve", self.service, "--nats", self.url],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """kill -9: no drain, requests in flight are lost with the process."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.kills += 1

    def stop(self, grace: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait(10)

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def cleanup(self) -> None:
        self.stop()
        with contextlib.suppress(OSError):
            self._log.close()
        with contextlib.suppress(OSError):
            self.log_path.unlink()


class Chaos:
    """A 3-node cluster and ``instances`` processes of each service, all on loopback."""

    def __init__(self, services: tuple[str, ...] = ("stream",), instances: int = 2, sync_always: bool = False) -> None:
        self.cluster = NatsCluster(3, sync_always=sync_always)
        self.services = services
        self.procs = [ServiceProc(s, self.url, i + 1) for s in services for i in range(instances)]

    @property
    def url(self) -> str:
        return self.cluster.url

    @property
    def nodes(self) -> list[NatsServer]:
        return self.cluster.nodes

    def start(self) -> Chaos:
        self.cluster.start()
        for p in self.procs:
            p.start()
        return self

    def cleanup(self) -> None:
        for p in self.procs:
            p.cleanup()
        self.cluster.cleanup()

    def instances(self, service: str) -> list[ServiceProc]:
        return [p for p in self.procs if p.service == service]

    def kill_node(self, i: int) -> None:
        proc = self.nodes[i].proc
        log(f"kill -9 nats node n{i + 1} (pid {proc.pid if proc is not None else '?'})")
        self.nodes[i].kill()

    def restart_node(self, i: int) -> None:
        log(f"restarting nats node n{i + 1}")
        self.nodes[i].start(timeout=30)

    def service_logs(self) -> str:
        return "\n".join(f"--- {p.name} (pid {p.proc.pid if p.proc else '?'})\n{p.log_tail()}" for p in self.procs)


async def connect(url: str, name: str) -> Client:
    """A client connection that knows every node and reconnects quickly (as a deployment would)."""
    return await jetstream.connect(
        url, name=name, max_reconnect_attempts=-1, reconnect_time_wait=0.2, connect_timeout=2
    )


async def wait_instances(nc: Client, service: str, n: int, within: float = 60.0) -> set[str]:
    """Until ``n`` instances of ``esdb-<service>`` answer ``$SRV.PING`` (each has its own id)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    ids: set[str] = set()

    async def on_pong(msg: Any) -> None:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            ids.add(json.loads(msg.data)["id"])

    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, cb=on_pong)
    try:
        while True:
            ids.clear()
            await nc.publish(f"$SRV.PING.esdb-{service}", b"", reply=inbox)
            await asyncio.sleep(0.3)
            if len(ids) >= n:
                return set(ids)
            if loop.time() > deadline:
                raise AssertionError(f"only {len(ids)} of {n} esdb-{service} instances answer $SRV.PING")
    finally:
        await sub.unsubscribe()


async def create_store(client: GaterClient, store: str = STORE) -> None:
    """The R3 store (a fresh cluster needs a few seconds to elect its meta leader)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while True:
        try:
            info = await client.create_store(store, replicas=3)
            assert info.replicas == 3
            return
        except GatewayError as exc:
            if loop.time() > deadline:
                raise
            log(f"store.create not yet: {exc!r}")
            await asyncio.sleep(0.5)


class RetryCounter:
    """Counts the client's retry attempts and give-ups (``esdb_gater.shared.core.telemetry.attach``)."""

    def __init__(self) -> None:
        self.id = f"chaos-{uuid.uuid4().hex[:8]}"
        self.attempts = 0
        self.exhausted = 0
        self.reasons: Counter[str] = Counter()

    def __enter__(self) -> RetryCounter:
        def handler(event: tuple[str, ...], measurements: dict[str, Any], metadata: dict[str, Any]) -> None:
            if event[-1] == "attempt":
                self.attempts += 1
                self.reasons[str(metadata.get("reason"))] += 1
            elif event[-1] == "exhausted":
                self.exhausted += 1

        attach(self.id, handler)
        return self

    def __exit__(self, *exc: object) -> None:
        detach(self.id)


# --- the ledger --------------------------------------------------------------------------------------


@dataclass
class Attempt:
    """One append as a client made it: its events' ids and what the client was told."""

    stream: str
    ids: list[str]
    expected: int
    version: int | None = None  # the reply's version (last event) when acknowledged
    error: str | None = None  # the error the client saw (after its retries)

    @property
    def acked(self) -> bool:
        return self.version is not None


@dataclass
class Verdict:
    appends_acked: int = 0
    events_acked: int = 0
    events_stored: int = 0
    lost: int = 0
    duplicates: int = 0
    partial: int = 0  # appends with some but not all of their events stored
    phantom: int = 0  # stored events no client ever sent
    misplaced: int = 0  # acked events not at the versions the reply named
    gaps: int = 0  # streams whose versions are not 0..n-1
    client_errors: int = 0
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"events acknowledged {self.events_acked} (in {self.appends_acked} appends), stored {self.events_stored}, "
            f"lost {self.lost}, duplicates {self.duplicates}, partial appends {self.partial}, "
            f"phantom {self.phantom}, misplaced {self.misplaced}, version gaps {self.gaps}, "
            f"client-visible errors {self.client_errors}"
        )


class Ledger:
    def __init__(self) -> None:
        self.attempts: list[Attempt] = []

    def new(self, stream: str, n: int, expected: int) -> Attempt:
        a = Attempt(stream, [str(uuid.uuid4()) for _ in range(n)], expected)
        self.attempts.append(a)
        return a

    def streams(self) -> list[str]:
        return sorted({a.stream for a in self.attempts})

    def check_visible(self, stream: str, events: list[Any]) -> list[str]:
        """All-or-nothing for every append of ``stream``, in one read of it: the problems found."""
        stored = {e.event_id for e in events}
        out = []
        for a in self.attempts:
            if a.stream != stream:
                continue
            present = sum(1 for i in a.ids if i in stored)
            if 0 < present < len(a.ids):
                out.append(f"{stream}: append {a.ids[0][:8]}… shows {present} of {len(a.ids)} events")
        return out

    async def verify(self, read: Callable[[str], Any]) -> Verdict:
        """Read every stream whole (``read(stream) -> events``) and compare with the ledger."""
        v = Verdict()
        sent: dict[str, Attempt] = {}
        for a in self.attempts:
            for i in a.ids:
                sent[i] = a
            if a.acked:
                v.appends_acked += 1
                v.events_acked += len(a.ids)
            if a.error is not None:
                v.client_errors += 1
        for stream in self.streams():
            events = await read(stream)
            v.events_stored += len(events)
            versions = [e.version for e in events]
            if versions != list(range(len(events))):
                v.gaps += 1
                v.problems.append(f"{stream}: versions are not 0..{len(events) - 1}: {versions[:20]}…")
            counts = Counter(e.event_id for e in events)
            v.duplicates += sum(c - 1 for c in counts.values() if c > 1)
            at = {e.event_id: e.version for e in events}
            for e in events:
                if e.event_id not in sent:
                    v.phantom += 1
                    v.problems.append(f"{stream}: event {e.event_id} at version {e.version} was never sent")
            for a in self.attempts:
                if a.stream != stream:
                    continue
                present = [i for i in a.ids if i in at]
                if 0 < len(present) < len(a.ids):
                    v.partial += 1
                    v.problems.append(f"{stream}: append {a.ids[0][:8]}… has {len(present)} of {len(a.ids)} events")
                if not a.acked:
                    continue
                missing = len(a.ids) - len(present)
                if missing:
                    v.lost += missing
                    v.problems.append(f"{stream}: acknowledged append {a.ids[0][:8]}… lost {missing} events")
                    continue
                want = list(range(a.version - len(a.ids) + 1, a.version + 1))  # type: ignore[operator]
                if [at[i] for i in a.ids] != want:
                    v.misplaced += len(a.ids)
                    v.problems.append(
                        f"{stream}: acknowledged at {want}, stored at {[at[i] for i in a.ids]} ({a.ids[0][:8]}…)"
                    )
        return v


async def read_all(client: GaterClient, store: str, stream: str, page: int = 1000) -> list[Any]:
    """Every event of a stream, forward, page by page."""
    out: list[Any] = []
    while True:
        try:
            batch = await client.stream_forward(store, stream, len(out), page)
        except GatewayError as exc:
            if exc.code.value == "stream_not_found" and not out:
                return []
            raise
        out.extend(batch)
        if len(batch) < page:
            return out


async def settle(nc: Client, store: str = STORE, within: float = 60.0) -> None:
    """Until every replica of the store's log stream is current (after a node came back)."""
    js = nc.jetstream()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    name = f"esdb-log-{store}"
    last = ""
    while loop.time() < deadline:
        try:
            info = await js.stream_info(name)
            cl = info.cluster
            replicas = list(cl.replicas or []) if cl is not None else []
            if (
                cl is not None
                and cl.leader
                and len(replicas) == 2
                and all(r.current and not r.offline for r in replicas)
            ):
                return
            last = f"leader {cl.leader if cl else None}, replicas {[(r.name, r.current, r.offline) for r in replicas]}"
        except Exception as exc:
            last = repr(exc)
        await asyncio.sleep(0.5)
    raise AssertionError(f"the store's replicas did not catch up: {last}")


async def close(*ncs: Client) -> None:
    for nc in ncs:
        with contextlib.suppress(Exception):
            await nc.drain()
        with contextlib.suppress(Exception):
            await nc.close()


def nats_connect_plain(url: str) -> Any:
    """A plain nats-py connection (for JetStream stream info)."""
    return nats.connect(servers=url.split(","), max_reconnect_attempts=-1, reconnect_time_wait=0.2)


# --- load ----------------------------------------------------------------------------------------------


@dataclass
class LoadStats:
    appends: int = 0
    reads: int = 0
    read_problems: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _events(ids: list[str], writer: int) -> list[dict[str, Any]]:
    return [{"event_id": i, "event_type": "Chaos", "data": {"w": writer, "n": k}} for k, i in enumerate(ids)]


async def _version(client: GaterClient, stream: str, stop: asyncio.Event) -> int | None:
    """The stream's version, asked again until the store answers; None once the load is over."""
    while True:
        try:
            return await client.get_version(STORE, stream)
        except GatewayError:
            if stop.is_set():
                return None
            await asyncio.sleep(0.2)


async def writer(
    client: GaterClient,
    ledger: Ledger,
    stats: LoadStats,
    stream: str,
    n: int,
    stop: asyncio.Event,
    *,
    exact: bool,
    sizes: tuple[int, int] = (1, 3),
    max_appends: int = 5_000,
) -> None:
    """Appends of ``sizes`` events with client-supplied ids until ``stop``: with the exact
    expected version it tracks (``exact``), or with ANY."""
    rng = random.Random(n)
    version = await _version(client, stream, stop) if exact else -2
    for _ in range(max_appends):
        if stop.is_set() or version is None:
            return
        a = ledger.new(stream, rng.randint(*sizes), version if exact else -2)
        try:
            r = await client.append_events(STORE, stream, a.expected, _events(a.ids, n))
        except GatewayError as exc:
            a.error = repr(exc)
            stats.errors.append(f"append {stream}: {exc!r}")
            if exact:
                version = await _version(client, stream, stop)
            continue
        a.version = r.version
        stats.appends += 1
        if exact:
            version = r.version


async def reader(client: GaterClient, ledger: Ledger, stats: LoadStats, stop: asyncio.Event) -> None:
    """Read every stream whole, again and again: each append must be all there or not at all."""
    while not stop.is_set():
        for stream in ledger.streams():
            try:
                events = await read_all(client, STORE, stream)
            except GatewayError as exc:
                stats.errors.append(f"read {stream}: {exc!r}")
                continue
            stats.reads += 1
            stats.read_problems += ledger.check_visible(stream, events)
        await asyncio.sleep(0.01)
