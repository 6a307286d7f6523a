"""``python -m esdb_gater.shared.tooling.probe``: the containers' health check (compose.yaml)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from esdb_gater.services import start_services
from esdb_gater.shared.core.settings import Settings
from esdb_gater.shared.runtime.runner import remove_ready_file, write_ready_file
from esdb_gater.shared.tooling.natsserver import free_port
from esdb_gater.shared.tooling.probe import main as probe_main


async def _probe(*argv: str) -> int:
    return await asyncio.to_thread(probe_main, list(argv))


async def test_ready_file_names_this_process_and_the_probe_pings_exactly_it(nats_url: str, tmp_path: Path) -> None:
    running = await start_services(["stream"], Settings(nats_url=nats_url))
    ready = tmp_path / "ready.json"
    try:
        write_ready_file(ready, running)
        body = json.loads(ready.read_text())
        assert set(body["services"]) == {"esdb-stream"} and body["pid"] > 0
        assert await _probe("--ready-file", str(ready), "--nats", nats_url) == 0
        assert await _probe("stream", "--nats", nats_url) == 0
        # another instance id of the same service: that process is not this one
        other = tmp_path / "other.json"
        other.write_text(json.dumps({"pid": 1, "services": {"esdb-stream": "NOTANINSTANCEID"}}))
        assert await _probe("--ready-file", str(other), "--nats", nats_url, "--timeout", "0.5") == 1
    finally:
        await running.stop()
        remove_ready_file(ready)
    assert not ready.exists()
    assert await _probe("--ready-file", str(ready), "--nats", nats_url) == 1  # no file: not started
    assert await _probe("nosuchservice", "--nats", nats_url, "--timeout", "0.5") == 1


async def test_probe_without_a_server_is_unhealthy_quickly() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    assert await asyncio.wait_for(_probe("stream", "--nats", url, "--timeout", "0.5"), 5) == 1
