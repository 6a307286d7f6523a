"""docs/eventsourcing.md's example: examples/eventsourcing_bank.py saves, reloads and follows bank
accounts; the same events are then read with ``gater req … stream.read_all`` and from Node.js
(examples/eventsourcing_read_all.mjs, when node and tests/crosslang/node_modules are there)."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.eventsourcing.conftest import ROOT, Gateway, fresh_store

EXAMPLES = ROOT / "examples"
NODE = shutil.which("node")
NODE_MODULES = ROOT / "tests" / "crosslang" / "node_modules"


def _example() -> ModuleType:
    """The example as the module ``eventsourcing_bank`` (its event topics name that module)."""
    if "eventsourcing_bank" not in sys.modules:
        spec = importlib.util.spec_from_file_location("eventsourcing_bank", EXAMPLES / "eventsourcing_bank.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["eventsourcing_bank"] = module
        spec.loader.exec_module(module)
    return sys.modules["eventsourcing_bank"]


@pytest.fixture(scope="module")
def run(es_gateway: Gateway) -> dict[str, Any]:
    bank, statements = fresh_store(), fresh_store()
    env = {
        "ESDB_GATER_NATS_URL": es_gateway.url,
        "ESDB_GATER_SUBJECT_PREFIX": es_gateway.prefix,
        "BANKACCOUNTS_ESDB_GATER_STORE": bank,  # per application: <APP NAME>_<KEY>
        "STATEMENTS_ESDB_GATER_STORE": statements,
    }
    seen: dict[str, Any] = _example().main(env)
    assert seen["stores"] == [bank, statements]
    return seen


TOPICS = [f"eventsourcing_bank:BankAccount.{t}" for t in ("Opened", "Deposited", "Withdrawn", "Deposited")]


def test_saved_reloaded_and_followed(run: dict[str, Any]) -> None:
    assert run["balance"] == "70.00"
    assert run["lines"] == ["+100.00", "-30.00", "+5.00"]


def test_gater_req_reads_the_same_events(es_gateway: Gateway, run: dict[str, Any]) -> None:
    subject = f"{es_gateway.prefix}.api.{run['stores'][0]}.stream.read_all"
    argv = [sys.executable, "-m", "esdb_gater.cli", "req", subject, '{"limit":10}', "--server", es_gateway.url]
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60, check=True).stdout
    reply = json.loads(out)
    assert [e["event_type"] for e in reply["events"]] == TOPICS
    assert {e["stream_id"] for e in reply["events"]} == {run["account_id"]}
    first = reply["events"][0]
    assert first["metadata"] == {"originator_version": 1, "originator_id_type": "uuid"}
    assert first["data_content_type"] == "application/octet-stream"
    assert json.loads(base64.b64decode(first["data"]))["owner"] == "Alice"
    assert reply["last_notification_id"] == reply["events"][-1]["notification_id"]
    # the snapshot is in its own store, not in the notification log
    snapshots = f"{es_gateway.prefix}.api.{run['stores'][0]}-snapshots.stream.read_all"
    argv = [sys.executable, "-m", "esdb_gater.cli", "req", snapshots, "{}", "--server", es_gateway.url]
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60, check=True).stdout
    (snapshot,) = json.loads(out)["events"]
    assert snapshot["event_type"] == "eventsourcing.domain:Snapshot"
    assert snapshot["metadata"]["originator_version"] == 3


@pytest.mark.skipif(
    NODE is None or not (NODE_MODULES / "nats").exists(),
    reason="node or tests/crosslang/node_modules missing (run: npm install --prefix tests/crosslang)",
)
def test_node_reads_the_same_events(es_gateway: Gateway, run: dict[str, Any], tmp_path: Path) -> None:
    # the script beside a link to the npm packages of tests/crosslang (ESM resolves from the script's folder)
    script = tmp_path / "eventsourcing_read_all.mjs"
    shutil.copy(EXAMPLES / "eventsourcing_read_all.mjs", script)
    (tmp_path / "node_modules").symlink_to(NODE_MODULES, target_is_directory=True)
    env = {"NATS_URL": es_gateway.url, "ESDB_GATER_SUBJECT_PREFIX": es_gateway.prefix, "PATH": os.environ["PATH"]}
    proc = subprocess.run(
        [str(NODE), str(script), run["stores"][0]], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert json.loads(lines[-1]) == {"ok": True, "count": 4, "topics": TOPICS}
    assert '"owner":"Alice"' in lines[0] and " v1 " in lines[0]
