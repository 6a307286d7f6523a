"""Service processes for ``gater up`` (one per service) and ``gater serve --instances N``.

Each child is ``python -m esdb_gater.cli serve NAME... --ready-file F`` (the NATS URL in
``ESDB_GATER_NATS_URL``, never on argv: it may carry a password) in a session of
its own (the terminal's Ctrl-C reaches only the parent), with the parent's environment plus the
settings it is given (passwords go by environment, never argv). On Linux a child also gets SIGTERM
when the parent dies, so none is left behind.

The parent waits until every child has written its ready file, then calls ``on_ready``. A child
that exits before it was ready stops everything (exit 3 when it could not reach NATS, else 1). A
child that exits later is reported in one line and restarted after 1, 2, 4, 8, 16 s; a sixth exit
in a row (each within a minute of its start) stops everything with exit 1. The first SIGINT/SIGTERM
sends SIGTERM to every child and waits for them to drain; a second kills them and exits 130.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from esdb_gater.shared.runtime.runner import DEFAULT_DRAIN_TIMEOUT_S, EXIT_UNREACHABLE, StopSignals

__all__ = ["MAX_RESTARTS", "ChildSpec", "child_argv", "settings_env", "supervise"]

MAX_RESTARTS = 5  # in a row; a child that ran STABLE_S counts as healthy again
STABLE_S = 60.0
_POLL_S = 0.05


@dataclass
class ChildSpec:
    label: str  # what the one-line reports call it: "stream", or "stream#2" for a second instance
    names: list[str]  # the services it runs
    env: dict[str, str] = field(default_factory=dict)  # added to the parent's environment


def child_argv(names: Sequence[str], ready_file: Path, connect_timeout: float, log_level: str) -> list[str]:
    """The child's command line. The NATS URL is not on it (it may carry a user and password,
    which ``ps`` would show): the child reads it from ``ESDB_GATER_NATS_URL`` (``child_env``)."""
    return [
        sys.executable,
        "-m",
        "esdb_gater.cli",
        "serve",
        *names,
        "--ready-file",
        str(ready_file),
        "--connect-timeout",
        str(connect_timeout),
        "--log-level",
        log_level,
    ]


def settings_env(values: Mapping[str, object], prefix: str = "ESDB_GATER_") -> dict[str, str]:
    """Settings overrides as ``ESDB_GATER_*`` variables: nested models one level down
    (``ESDB_GATER_SECURITY__TARGET_ALLOW``), values that are not strings as JSON."""
    env: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key.upper()}"
        if isinstance(value, Mapping) and prefix == "ESDB_GATER_":
            env.update(settings_env(value, f"{name}__"))
        elif isinstance(value, str):
            env[name] = value
        else:
            env[name] = json.dumps(value)
    return env


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    if sys.platform == "linux":
        import ctypes

        pr_set_pdeathsig = 1
        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class _Child:
    def __init__(self, spec: ChildSpec, ready_file: Path, argv: list[str]) -> None:
        self.spec = spec
        self.ready_file = ready_file
        self.argv = argv
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.ready = False
        self.ever_ready = False
        self.restarts = 0
        self.restart_at: float | None = None

    def start(self) -> None:
        self.ready_file.unlink(missing_ok=True)
        self.ready = False
        self.restart_at = None
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            self.argv,
            env={**os.environ, **self.spec.env},
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # prctl only: nothing that takes a lock
        )

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                assert self.proc is not None
                self.proc.send_signal(sig)


async def supervise(
    command: str,
    specs: Sequence[ChildSpec],
    url: str,
    connect_timeout: float,
    log_level: str,
    say: Callable[[str], None],
    on_ready: Callable[[], None] | None = None,
    ready_file: Path | None = None,
    on_force_exit: Callable[[], None] | None = None,
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT_S,
) -> int:
    """Run ``specs`` as child processes until SIGINT/SIGTERM (see the module docstring); returns
    the exit code. ``say``: one line on stderr. ``ready_file``: written (pid, the first instance's
    services, every instance) once all are ready."""
    folder = Path(tempfile.mkdtemp(prefix="gater-children-"))
    children = [
        _Child(
            replace(s, env={**s.env, "ESDB_GATER_NATS_URL": url}),
            folder / f"{i}.json",
            child_argv(s.names, folder / f"{i}.json", connect_timeout, log_level),
        )
        for i, s in enumerate(specs)
    ]

    def kill_all() -> None:
        for c in children:
            c.signal(signal.SIGKILL)
        if on_force_exit is not None:
            on_force_exit()

    signals = StopSignals(kill_all)
    signals.install()
    code = 0
    try:
        for c in children:
            c.start()
        announced = False
        while not signals.stop.is_set():
            now = time.monotonic()
            for c in children:
                if c.restart_at is not None:
                    if now >= c.restart_at:
                        c.start()
                    continue
                assert c.proc is not None
                exit_code = c.proc.poll()
                if exit_code is None:
                    if not c.ready and c.ready_file.exists():
                        c.ready = c.ever_ready = True
                    continue
                if not c.ever_ready:
                    say(f"gater {command}: {c.spec.label} (pid {c.pid}) exited with code {exit_code} before ready")
                    return EXIT_UNREACHABLE if exit_code == EXIT_UNREACHABLE else 1
                if now - c.started >= STABLE_S:
                    c.restarts = 0
                if c.restarts >= MAX_RESTARTS:
                    say(
                        f"gater {command}: {c.spec.label} (pid {c.pid}) exited with code {exit_code}, "
                        f"{MAX_RESTARTS + 1} times in a row; stopping everything"
                    )
                    return 1
                delay = 2.0**c.restarts
                c.restarts += 1
                c.restart_at = now + delay
                c.ready = False
                say(
                    f"gater {command}: {c.spec.label} (pid {c.pid}) exited with code {exit_code}; "
                    f"restarting in {delay:.0f} s ({c.restarts} of {MAX_RESTARTS})"
                )
            if not announced and all(c.ready for c in children):
                announced = True
                if ready_file is not None:
                    _write_ready_file(ready_file, children)
                if on_ready is not None:
                    on_ready()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(signals.stop.wait(), _POLL_S)
        return code
    finally:
        await _stop(children, drain_timeout + 5.0)
        _cleanup(ready_file, folder)
        signals.remove()


async def _stop(children: list[_Child], within: float) -> None:
    """SIGTERM to every child (each drains), SIGKILL to what is left after ``within`` seconds."""
    for c in children:
        c.restart_at = None
        c.signal(signal.SIGTERM)
    for _ in range(int(within / _POLL_S)):
        if not any(c.alive() for c in children):
            break
        await asyncio.sleep(_POLL_S)
    for c in children:
        c.signal(signal.SIGKILL)
        if c.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                c.proc.wait(5)


def _cleanup(ready_file: Path | None, folder: Path) -> None:
    if ready_file is not None:
        ready_file.unlink(missing_ok=True)
    shutil.rmtree(folder, ignore_errors=True)


def _write_ready_file(path: Path, children: list[_Child]) -> None:
    instances: list[dict[str, Any]] = []
    for c in children:
        with contextlib.suppress(OSError, ValueError):
            instances.append(json.loads(c.ready_file.read_text()))
    body = {"pid": os.getpid(), "services": instances[0]["services"] if instances else {}, "instances": instances}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(body) + "\n")
    tmp.replace(path)
