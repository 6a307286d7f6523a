"""Child processes of the benchmark: the stream service and the zero-work responder.

Both run as separate Python processes (as in production, where the gateway is its own process),
so the benchmark's client loop, the service and nats-server are three processes sharing the
machine's cores. Every child is stopped by its own pid: SIGTERM, then SIGKILL after a grace
period.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["ROOT", "Child", "rss_mb", "service_child", "zero_child"]

ROOT = Path(__file__).resolve().parent.parent  # the project folder (has shared/ and services/)


def rss_mb(pid: int) -> float | None:
    """Resident set size of a process in MB (``VmRSS`` of /proc/<pid>/status), None if gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


class Child:
    """One child process with its stdout/stderr in a log file."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log", delete=False)  # noqa: SIM115
        self.log_path = Path(self._log.name)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Child:
        self.proc = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # Own session: a Ctrl-C in the terminal reaches only the benchmark, which then
            # stops its children in order (service first, nats-server last).
            start_new_session=True,
        )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            text = self.log_path.read_text(errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return ""

    def log_text(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")
        return ""

    def stop(self, grace: float = 8.0) -> int | None:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL. Returns the exit code."""
        if self.proc is None:
            return None
        rc = self.proc.poll()
        if rc is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                rc = self.proc.wait()
        return rc

    def cleanup(self) -> None:
        self.stop()
        with contextlib.suppress(OSError):
            self._log.close()
        with contextlib.suppress(OSError):
            self.log_path.unlink()


def service_child(nats_url: str, profile_to: str | None = None, service: str = "stream") -> Child:
    """``python -m esdb_gater.cli serve stream --nats URL`` with stores created on first use.

    ``profile_to``: run it under cProfile and write the stats there when it stops."""
    env = dict(os.environ)
    env["ESDB_GATER_AUTO_CREATE_STORES"] = "true"
    # No OTLP export during the benchmark: the OpenTelemetry API stays in its no-op mode.
    for key in list(env):
        if key.startswith("OTEL_EXPORTER_OTLP"):
            del env[key]
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    argv = [sys.executable]
    if profile_to:
        argv += ["-m", "cProfile", "-o", profile_to]
    argv += ["-m", "esdb_gater.cli", "serve", service, "--nats", nats_url]
    return Child(f"{service}-service", argv, env)


def zero_child(nats_url: str, subject: str, loop: str = "asyncio") -> Child:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return Child("zero-responder", [sys.executable, "-m", "esdb_gater.bench.zero", nats_url, subject, loop], env)
