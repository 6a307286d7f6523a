"""Every ``examples/*.sh`` runs twice in a row on the same, non-fresh server (issue 14).

The scripts run with bash, as a user would run them, against the session's server
(``NATS_URL``), with ``.venv/bin`` first on the ``PATH`` so that ``gater req`` answers when the
``nats`` CLI is not installed (examples/_req.sh). Each run must exit 0 (``set -euo pipefail``:
an unreachable server or a failed ``req`` stops the script) and no reply may be an ``internal``
error. The documented error replies the scripts show on purpose (409, 404, 400 …) are fine.

``channel.sh`` signs a message with the secret ``demo-secret``, so it runs against a server of
its own whose channel service has that secret; there the second run must not be a replay of the
first, and the signed publish must be accepted both times.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from esdb_gater.shared.core.settings import ChannelsSettings, Settings
from esdb_gater.shared.runtime.runner import Running
from tests.security.conftest import own_server, own_services

pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p.name for p in (ROOT / "examples").glob("*.sh") if not p.name.startswith("_"))


async def run_script(name: str, url: str) -> tuple[int, str]:
    env = {
        **os.environ,
        "NATS_URL": url,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "BURST": "3",  # channel.sh: a few publishes, not 150 Python processes
    }
    env.pop("RUN", None)  # each run takes its own suffix
    proc = await asyncio.create_subprocess_exec(
        "bash",
        str(ROOT / "examples" / name),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=180)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


def check(name: str, run: int, rc: int, out: str) -> None:
    assert rc == 0, f"{name} run {run} exited {rc}:\n{out[-3000:]}"
    assert '"code":"internal"' not in out, f"{name} run {run}: an internal error\n{out}"
    assert "Traceback" not in out, f"{name} run {run}:\n{out}"


def test_every_example_uses_the_fallback() -> None:
    """No script calls the nats CLI directly (outside micro.sh's `nats micro`, which has a
    `gater req` branch): they go through examples/_req.sh."""
    for name in EXAMPLES:
        text = (ROOT / "examples" / name).read_text()
        assert '. "$(dirname "$0")/_req.sh"' in text, name
        assert "set -euo pipefail" in text, name
        for line in text.splitlines():
            if line.strip().startswith("nats ") and name != "micro.sh":
                pytest.fail(f"{name}: {line}")


async def test_every_example_runs_twice(services: Running, nats_url: str) -> None:
    """The scripts run side by side (each twice in a row): each uses ids of its own, and most of
    their time is the start of a Python process per `gater req`."""
    limit = asyncio.Semaphore(4)

    async def twice(name: str) -> None:
        async with limit:
            for run in (1, 2):
                rc, out = await run_script(name, nats_url)
                check(name, run, rc, out)

    await asyncio.gather(*(twice(n) for n in EXAMPLES if n != "channel.sh"))


@pytest.mark.requires_own_server
async def test_channel_example_runs_twice_with_its_secret() -> None:
    with own_server("examples-channel") as srv:
        settings = Settings(
            nats_url=srv.url,
            auto_create_stores=True,
            channels=ChannelsSettings(hmac_secret=SecretStr("demo-secret")),
        )
        async with own_services(settings, ["channel"]):
            for run in (1, 2):
                rc, out = await run_script("channel.sh", srv.url)
                check("channel.sh", run, rc, out)
                signed = out.split("== sign:", 1)[1].split("== the same message again", 1)[0]
                assert '{"ok":true,"seq":' in signed, out
                assert "replayed" in out.split("== the same message again", 1)[1], out
