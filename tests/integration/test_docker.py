"""The stream service against a stock ``nats:2.11`` container (testcontainers), so the gateway is
known to work with the official image and not just the pip-installed binary. Skips when no Docker
engine answers."""

from __future__ import annotations

import gc
import warnings

import pytest


def _docker_engine_answers() -> bool:
    """One ping, computed once at import. docker-py leaves its socket open when the engine does
    not answer; that ResourceWarning is ours to swallow here, not the suite's to fail on."""
    try:
        import docker
        import requests
        from docker.errors import DockerException
    except ImportError:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            engine = docker.from_env(timeout=2)
            try:
                engine.ping()
            finally:
                engine.close()
        except (DockerException, requests.exceptions.RequestException, OSError):
            answers = False
        else:
            answers = True
        gc.collect()  # finalise the failed client's socket while the warning is ignored
    return answers


DOCKER_AVAILABLE = _docker_engine_answers()

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(not DOCKER_AVAILABLE, reason="no Docker engine reachable"),
]


async def test_append_and_read_against_a_nats_container() -> None:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    from esdb_gater.services import start_services
    from esdb_gater.shared.client import GaterClient
    from esdb_gater.shared.core.settings import Settings

    container = (
        DockerContainer("nats:2.11")
        .with_command("-js")
        .with_exposed_ports(4222)
        .waiting_for(LogMessageWaitStrategy("Server is ready"))
    )
    with container:
        url = f"nats://{container.get_container_host_ip()}:{container.get_exposed_port(4222)}"
        running = await start_services(["stream"], Settings(nats_url=url, auto_create_stores=True))
        try:
            client = await GaterClient.connect(url)
            try:
                r = await client.append_events("docker", "order-1", -1, [{"event_type": "Placed", "data": {"n": 1}}])
                assert (r.version, r.count) == (0, 1)
                r = await client.append_events("docker", "order-1", 0, [{"event_type": "Paid", "data": {"n": 2}}])
                assert r.version == 1
                events = await client.stream_forward("docker", "order-1", 0, 10)
                assert [(e.version, e.event_type, e.data) for e in events] == [
                    (0, "Placed", {"n": 1}),
                    (1, "Paid", {"n": 2}),
                ]
                assert await client.get_version("docker", "order-1") == 1
            finally:
                await client.close()
        finally:
            await running.stop()
