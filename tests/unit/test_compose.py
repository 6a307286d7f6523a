"""compose.yaml: valid against the compose specification, and complete — every service in
services/ runs with two replicas and a health check, beside a 3-node NATS cluster and an
OpenTelemetry collector. (No Docker engine is needed: nothing is started.)"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from esdb_gater.services import SERVICES
from esdb_gater.shared.security import accounts

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = YAML(typ="safe").load(COMPOSE.read_text())  # resolves the << merges
    return data


def test_compose_validates_against_the_compose_spec_schema() -> None:
    exe = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent)) or shutil.which("check-jsonschema")
    assert exe is not None, "check-jsonschema is part of the test extra: pip install -e '.[test]'"
    proc = subprocess.run(
        [exe, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_service_runs_twice_with_a_health_check_on_its_own_instances(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in SERVICES:
        assert name in services, f"services/{name} has no service in compose.yaml"
        svc = services[name]
        cmd = svc["command"]
        assert cmd[:2] == ["serve", name], cmd
        ready = cmd[cmd.index("--ready-file") + 1]
        assert svc["deploy"]["replicas"] == 2, name
        test = svc["healthcheck"]["test"]
        assert test[:4] == ["CMD", "python", "-m", "esdb_gater.shared.tooling.probe"], test
        assert test[test.index("--ready-file") + 1] == ready, (name, test)
        env = svc["environment"]
        assert env["ESDB_GATER_NATS_URL"].split(",") == [f"nats://nats{i}:4222" for i in (1, 2, 3)]
        assert env["ESDB_GATER_DEFAULT_STORE__REPLICAS"] == "3"
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
        for node in ("nats1", "nats2", "nats3"):
            assert svc["depends_on"][node]["condition"] == "service_healthy"
        # tenant accounts (ADR 0014): the service connects as its own user of nats/accounts.conf
        assert env["ESDB_GATER_NATS_USER"] == name
        assert env["ESDB_GATER_NATS_PASSWORD"].startswith("${" + accounts.password_env(name) + ":?")
    gateway = {n for n, s in services.items() if s.get("build")}
    assert gateway == set(SERVICES), f"compose.yaml runs services that do not exist: {sorted(gateway - set(SERVICES))}"


def test_a_three_node_nats_cluster_from_nats_compose_and_a_collector(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for i in (1, 2, 3):
        node = services[f"nats{i}"]
        assert node["command"] == ["-c", f"/etc/nats/compose/n{i}.conf"]
        assert "./nats:/etc/nats:ro" in node["volumes"]
        assert (ROOT / "nats" / "compose" / f"n{i}.conf").is_file()
        conf = (ROOT / "nats" / "compose" / f"n{i}.conf").read_text()
        assert "jetstream" in conf and all(f"nats-route://nats{j}:6222" in conf for j in (1, 2, 3))
        assert "\ninclude ../accounts.conf\n" in conf
        # every user's password reaches the node, from the environment (.env), never the file
        assert set(node["environment"]) == {accounts.password_env(u) for u in accounts.users()}
        assert "healthz" in " ".join(node["healthcheck"]["test"])
    collector = services["otel-collector"]
    assert any("otel-collector.yaml" in v for v in collector["volumes"])
    assert (ROOT / "nats" / "compose" / "otel-collector.yaml").is_file()


def test_the_services_get_the_secure_settings_of_the_accounts_layout(compose: dict[str, Any]) -> None:
    """compose.yaml's target allow-lists are those ``gater up --secure`` uses (shared/security/accounts.py)."""
    wanted = accounts.secure_settings()
    for name in SERVICES:
        env = compose["services"][name]["environment"]
        assert json.loads(env["ESDB_GATER_SECURITY__TARGET_ALLOW"]) == wanted["security"]["target_allow"]  # type: ignore[index]
        assert json.loads(env["ESDB_GATER_CHANNELS__DELIVER_PREFIXES"]) == wanted["channels"]["deliver_prefixes"]  # type: ignore[index]
