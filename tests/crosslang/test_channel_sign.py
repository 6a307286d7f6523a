"""Cross-language HMAC: a Node.js script (node:crypto and the npm ``nats`` client, no Python)
checks the published test vectors (docs/hmac-vectors.json), signs messages as docs/security.md
describes and publishes them through the channel service, which accepts them."""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from esdb_gater.services import start_services
from esdb_gater.shared.core.settings import ChannelsSettings, Settings
from esdb_gater.shared.runtime.runner import Running

HERE = Path(__file__).parent
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(
    NODE is None or not (HERE / "node_modules" / "nats").exists(),
    reason="node or tests/crosslang/node_modules missing (run: npm install --prefix tests/crosslang)",
)

PREFIX = "xl5"
SECRET = "node-" + secrets.token_hex(8) + "-ü"


@pytest.fixture(scope="module")
async def channel_service(nats_url: str) -> AsyncIterator[Running]:
    running = await start_services(
        ["channel"], Settings(nats_url=nats_url, subject_prefix=PREFIX, channels=ChannelsSettings(hmac_secret=SECRET))
    )
    try:
        yield running
    finally:
        await running.stop()


async def test_node_signs_per_the_docs_and_the_service_accepts(channel_service: Running, nats_url: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        str(NODE),
        str(HERE / "channel_sign.mjs"),
        env={"NATS_URL": nats_url, "ESDB_PREFIX": PREFIX, "ESDB_SECRET": SECRET, "PATH": "/usr/bin:/bin"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    result = json.loads(out.decode().strip().splitlines()[-1])
    vectors = json.loads((HERE.parent.parent / "docs" / "hmac-vectors.json").read_text())["vectors"]
    assert result == {"ok": True, "vectors": len(vectors), "delivered": True}
