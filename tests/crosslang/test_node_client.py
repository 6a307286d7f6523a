"""A real second-language client: a Node.js script (npm ``nats``) drives the stream service
using only what docs/api/stream.md documents."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

HERE = Path(__file__).parent
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(
    NODE is None or not (HERE / "node_modules" / "nats").exists(),
    reason="node or tests/crosslang/node_modules missing (run: npm install --prefix tests/crosslang)",
)


async def _run(script: str, nats_url: str, store: str) -> dict[str, object]:
    proc = await asyncio.create_subprocess_exec(
        str(NODE),
        str(HERE / script),
        store,
        env={"NATS_URL": nats_url, "PATH": "/usr/bin:/bin"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    result: dict[str, object] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def test_node_client_appends_reads_and_conflicts(services: object, nats_url: str, store: str) -> None:
    assert (await _run("stream.mjs", nats_url, store))["ok"] is True


async def test_node_service_follows_a_persistent_subscription(services: object, nats_url: str, store: str) -> None:
    result = await _run("subscription.mjs", nats_url, store)
    assert result == {"ok": True, "seen": [0, 1, 2, 3]}
