"""``gater up`` / ``gater serve`` as a user meets them: real processes (``python -m esdb_gater.cli``),
real signals, a real nats-server (ADR 0018). Every wait is bounded and every process started here
is stopped in a ``finally``."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import IO, Any

import nats
import pytest

from esdb_gater.shared.tooling.natsserver import free_port, lock_data_dir

ROOT = Path(__file__).resolve().parents[2]
GATER = [sys.executable, "-m", "esdb_gater.cli"]
EXIT_UNREACHABLE = 3
EXIT_IN_USE = 4


def _env(**extra: str) -> dict[str, str]:
    """No NATS_URL or ESDB_GATER_* from the caller's shell; a wide terminal for help output."""
    env = {k: v for k, v in os.environ.items() if k != "NATS_URL" and not k.startswith(("ESDB_GATER_", "OTEL_"))}
    env["COLUMNS"] = "200"
    env.update(extra)
    return env


def _gater(*args: str, timeout: float = 60.0, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*GATER, *args], cwd=ROOT, env=_env(**env), capture_output=True, text=True, timeout=timeout, check=False
    )


class Lines:
    """A stream's lines, read by a thread, so that a wait for one is bounded."""

    def __init__(self, stream: IO[str]) -> None:
        self.seen: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        self._stream = stream
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        """After the process has ended: the reader has seen EOF."""
        self._thread.join(10)
        self._stream.close()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._q.put(line)
        self._q.put(None)

    def wait_for(self, text: str, within: float) -> str:
        deadline = time.monotonic() + within
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line with {text!r} within {within} s:\n{''.join(self.seen)}")
            try:
                line = self._q.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"the stream ended before a line with {text!r}:\n{''.join(self.seen)}")
            self.seen.append(line)
            if text in line:
                return line

    def rest(self, within: float) -> str:
        """Everything until the stream ends (bounded)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                line = self._q.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
        return "".join(self.seen)


@contextmanager
def _running(*args: str, **env: str) -> Iterator[tuple[subprocess.Popen[str], Lines, Lines]]:
    proc = subprocess.Popen(
        [*GATER, *args],
        cwd=ROOT,
        env=_env(**env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    out, err = Lines(proc.stdout), Lines(proc.stderr)
    try:
        yield proc, out, err
    finally:
        if proc.poll() is None:
            # SIGTERM first: gater up stops its own nats-server (which runs in a session of its own)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        out.close()
        err.close()


def _one_line_no_traceback(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, stderr
    return lines[0]


def test_version_prints_the_installed_distribution_version() -> None:
    out = _gater("--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"gater {dist_version('esdb-gater')}"


def test_up_help_shows_every_option_with_help_and_defaults() -> None:
    out = _gater("up", "--help")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for option in ("--port", "--data-dir", "--nats", "--embedded", "--sync", "--secure", "--connect-timeout"):
        assert option in text, text
    assert "[default: 4222]" in text
    assert "[default: .gater-data]" in text
    assert "ESDB_GATER_DATA_DIR" in text
    assert "JetStream data" in text  # --data-dir has help
    assert "[default: 10.0]" in text


def test_bench_help_names_gater_bench() -> None:
    out = _gater("bench", "--help")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: gater bench"), out.stdout


def test_up_against_unreachable_nats_exits_3_with_one_line() -> None:
    url = f"nats://127.0.0.1:{free_port()}"  # nothing listens there
    out = _gater("up", "--nats", url, "--connect-timeout", "1", timeout=30)
    assert out.returncode == EXIT_UNREACHABLE, out.stdout + out.stderr
    line = _one_line_no_traceback(out.stderr)
    assert line == f"gater up: cannot reach NATS at {url} within 1 s (connection refused)"
    assert f"NATS {url} (not started here: --nats)" in out.stdout


def test_up_says_when_the_server_comes_from_nats_url() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    out = _gater("up", "--connect-timeout", "1", timeout=30, NATS_URL=url)
    assert out.returncode == EXIT_UNREACHABLE, out.stdout + out.stderr
    assert "NATS_URL is set; --embedded starts gater's own server instead" in out.stdout
    line = _one_line_no_traceback(out.stderr)
    assert line.startswith(f"gater up: cannot reach NATS at {url} within 1 s")
    assert "NATS_URL" in line and "--embedded" in line


def test_serve_against_unreachable_nats_exits_3_without_traceback() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    out = _gater("serve", "stream", "--nats", url, "--connect-timeout", "1", timeout=30)
    assert out.returncode == EXIT_UNREACHABLE, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines[0] == f"gater serve: stream on NATS {url} (from --nats)"
    assert lines[-1] == f"gater serve: cannot reach NATS at {url} within 1 s (connection refused)"
    assert len(lines) == 2, out.stderr


def test_ctrl_c_while_connecting_stops_at_once() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    # -v: each refused attempt of the connect loop is logged, so the test knows it is in there
    with _running("serve", "stream", "--nats", url, "--connect-timeout", "120", "-v") as (proc, _out, err):
        err.wait_for("gater serve: stream on NATS", within=30)
        err.wait_for(f"connecting to NATS at {url}", within=30)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        assert "Traceback" not in err.rest(5)


def test_port_in_use_is_one_line_before_any_server_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = _gater("up", "--port", str(port), "--data-dir", str(tmp_path / "data"), timeout=30)
    assert out.returncode == EXIT_IN_USE, out.stdout + out.stderr
    assert _one_line_no_traceback(out.stderr) == f"gater up: port {port} is in use; use --port N or --port 0"
    assert not (tmp_path / "data" / "jetstream").exists()  # no server was started


@pytest.mark.timeout(150)
def test_up_locks_its_data_dir_answers_and_stops_on_sigint(tmp_path: Path) -> None:
    data = (tmp_path / "data").resolve()
    elsewhere = f"nats://127.0.0.1:{free_port()}"
    # --embedded: its own server although NATS_URL names another (which would not answer)
    with _running("up", "--embedded", "--port", "0", "--data-dir", str(data), NATS_URL=elsewhere) as (proc, out, err):
        first = out.wait_for("nats-server nats://", within=60)
        url = first.split()[1]
        assert "(embedded: --embedded, NATS_URL ignored;" in first
        out.wait_for("Ctrl-C stops everything", within=60)
        banner = "".join(out.seen)
        assert f"try: gater req --server {url} esdb.api.demo.stream.version" in banner  # --port 0: the URL
        # one HMAC secret for every service, kept in the data folder for the owner only: no random
        # per-process secret (and no warning about one)
        secret = data / "hmac-secret"
        assert f"HMAC secret for signed channel messages: {secret}" in banner
        assert secret.stat().st_mode & 0o777 == 0o600
        assert len(secret.read_text().strip()) == 64

        # it answers
        async def ask() -> dict[str, Any]:
            nc = await nats.connect(url)
            try:
                msg = await nc.request("esdb.api.demo.stream.version", b'{"stream_id":"x"}', timeout=10)
                reply: dict[str, Any] = json.loads(msg.data)
                return reply
            finally:
                await nc.close()

        assert asyncio.run(ask()) == {"version": -1}

        # a second gater up on the same folder fails at once, before touching it
        second = _gater("up", "--port", "0", "--data-dir", str(data), timeout=30)
        assert second.returncode == EXIT_IN_USE, second.stdout + second.stderr
        assert _one_line_no_traceback(second.stderr) == (
            f"gater up: {data} is in use by another gater up (pid {proc.pid})"
        )
        assert second.stdout == ""

        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, out.rest(5) + err.rest(5)
        assert "nats-server stopped" in out.rest(5)
        assert "Traceback" not in err.rest(5)
        assert "no HMAC secret configured" not in "".join(err.seen) + "".join(out.seen)

    # the lock went with the process: the folder can be taken again
    with lock_data_dir(data):
        pass


def _children(pid: int) -> dict[int, str]:
    """The live child processes of ``pid``: pid → command line (from /proc)."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found[int(entry.name)] = cmdline
    return found


def _gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


async def _ping(url: str, subject: str, window: float = 0.5) -> list[dict[str, Any]]:
    """Every answer to ``subject`` within ``window`` seconds."""
    nc = await nats.connect(url)
    try:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        await nc.publish(subject, b"", reply=inbox)
        answers: list[dict[str, Any]] = []
        deadline = time.monotonic() + window
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = await sub.next_msg(timeout=left)
            except nats.errors.TimeoutError:
                break
            answers.append(json.loads(msg.data))
        return answers
    finally:
        await nc.close()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.timeout(150)
def test_up_runs_each_service_in_its_own_process_and_ctrl_c_stops_them_all(tmp_path: Path) -> None:
    from esdb_gater.services import SERVICES

    with _running("up", "--port", "0", "--data-dir", str(tmp_path / "data")) as (proc, out, err):
        url = out.wait_for("nats-server nats://", within=60).split()[1]
        out.wait_for("Ctrl-C stops everything", within=60)
        children = _children(proc.pid)
        served = {pid: cmd.split(" serve ", 1)[1].split()[0] for pid, cmd in children.items() if " serve " in cmd}
        assert sorted(served.values()) == sorted(SERVICES), children
        assert all("password" not in cmd.lower() for cmd in children.values())
        # one instance of each service answers $SRV.PING, each from its own process
        pings = asyncio.run(_ping(url, "$SRV.PING"))
        assert sorted(p["name"] for p in pings) == sorted(f"esdb-{name}" for name in SERVICES), pings
        # a store is made on first use, as in one process
        reply = asyncio.run(_request(url, "esdb.api.demo.stream.append", b'{"stream_id":"x","events":[{"type":"T"}]}'))
        assert reply["version"] == 0, reply

        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, out.rest(5) + err.rest(5)
        assert "nats-server stopped" in out.rest(5)
        assert "Traceback" not in err.rest(5)
        left = [pid for pid in children if not _gone(pid)]
        assert left == [], {pid: children[pid] for pid in left}


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.timeout(150)
def test_up_processes_1_keeps_every_service_in_one_process(tmp_path: Path) -> None:
    with _running("up", "--port", "0", "--processes", "1", "--data-dir", str(tmp_path / "data")) as (proc, out, err):
        url = out.wait_for("nats-server nats://", within=60).split()[1]
        out.wait_for("Ctrl-C stops everything", within=60)
        children = _children(proc.pid)
        assert [cmd for cmd in children.values() if "nats-server" not in cmd] == [], children
        reply = asyncio.run(_request(url, "esdb.api.demo.stream.version", b'{"stream_id":"x"}'))
        assert reply == {"version": -1}
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, out.rest(5) + err.rest(5)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.timeout(120)
def test_serve_instances_2_puts_two_processes_in_the_queue_group(nats_url: str, tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    args = ("serve", "stream", "--nats", nats_url, "--instances", "2", "--ready-file", str(ready))
    with _running(*args, ESDB_GATER_AUTO_CREATE_STORES="true") as (proc, _out, err):
        err.wait_for("gater serve: stream on NATS", within=30)
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None, err.rest(5)
            assert time.monotonic() < deadline, "no ready file"
            time.sleep(0.05)
        body = json.loads(ready.read_text())
        assert body["pid"] == proc.pid
        ids = [i["services"]["esdb-stream"] for i in body["instances"]]
        pids = {i["pid"] for i in body["instances"]}
        assert len(set(ids)) == 2 and len(pids) == 2 and proc.pid not in pids, body
        assert pids == set(_children(proc.pid)), _children(proc.pid)
        for sid in ids:
            answers = asyncio.run(_ping(nats_url, f"$SRV.PING.esdb-stream.{sid}"))
            assert [a["id"] for a in answers] == [sid]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, err.rest(5)
        assert not ready.exists()
        assert all(_gone(pid) for pid in pids)


async def _request(url: str, subject: str, body: bytes) -> dict[str, Any]:
    nc = await nats.connect(url)
    try:
        msg = await nc.request(subject, body, timeout=10)
        reply: dict[str, Any] = json.loads(msg.data)
        return reply
    finally:
        await nc.close()
