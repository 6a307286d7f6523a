"""The wire surface of the link, scavenger, causation and health services, pinned: every subject,
its request and reply models, its scope, and the ADR-32 names. A change here is a wire change."""

from __future__ import annotations

from typing import Any

import pytest

from esdb_gater.services.causation import service as causation
from esdb_gater.services.health import service as health
from esdb_gater.services.link import service as link
from esdb_gater.services.scavenger import service as scavenger
from esdb_gater.shared.core.subjects import Subjects
from esdb_gater.shared.runtime.endpoint import Op

PINNED: dict[str, dict[tuple[str, str], tuple[str, str, str]]] = {
    "link": {
        ("link", "create"): ("CreateLinkRequest", "LinkInfo", "store"),
        ("link", "start"): ("LinkNameRequest", "LinkInfo", "store"),
        ("link", "stop"): ("LinkNameRequest", "LinkInfo", "store"),
        ("link", "delete"): ("DeleteLinkRequest", "OkResponse", "store"),
        ("link", "get"): ("LinkNameRequest", "LinkInfo", "store"),
        ("link", "list"): ("ListLinksRequest", "LinksResponse", "store"),
        ("link", "info"): ("LinkNameRequest", "LinkInfo", "store"),
    },
    "scavenger": {
        ("scavenger", "scavenge"): ("ScavengeRequest", "ScavengeResult", "store"),
        ("scavenger", "scavenge_matching"): ("ScavengeMatchingRequest", "ScavengeResults", "store"),
        ("scavenger", "dry_run"): ("DryRunRequest", "ScavengeResult", "store"),
        ("scavenger", "archive_read"): ("ArchiveReadRequest", "ArchiveReadResponse", "store"),
        ("scavenger", "policy_set"): ("PolicySetRequest", "Policy", "store"),
        ("scavenger", "policy_get"): ("PolicyNameRequest", "Policy", "store"),
        ("scavenger", "policy_list"): ("PolicyListRequest", "PoliciesResponse", "store"),
        ("scavenger", "policy_delete"): ("PolicyNameRequest", "OkResponse", "store"),
    },
    "causation": {
        ("causation", "effects"): ("EventIdRequest", "EventsResponse", "store"),
        ("causation", "cause"): ("EventIdRequest", "CauseResponse", "store"),
        ("causation", "chain"): ("ChainRequest", "EventsResponse", "store"),
        ("causation", "correlated"): ("CorrelatedRequest", "EventsResponse", "store"),
        ("causation", "graph"): ("GraphRequest", "GraphResponse", "store"),
    },
    "health": {
        ("health", "check"): ("HealthCheckRequest", "HealthReport", "global"),
        ("health", "quick"): ("QuickCheckRequest", "OkResponse", "store"),
        ("memory", "level"): ("MemoryRequest", "MemoryLevelResponse", "store"),
        ("memory", "stats"): ("MemoryRequest", "MemoryStatsResponse", "store"),
    },
}

SUBJECTS = {
    "health": [
        "esdb.api._.health.check",
        "esdb.api.*.health.quick",
        "esdb.api.*.memory.level",
        "esdb.api.*.memory.stats",
    ],
}

SPECS: dict[str, Any] = {
    "link": lambda: link.spec(None, None, 1.0),  # type: ignore[arg-type]
    "scavenger": lambda: scavenger.spec(None, None),  # type: ignore[arg-type]
    "causation": lambda: causation.spec(None, None),  # type: ignore[arg-type]
    "health": lambda: health.spec(None, None, []),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_ops_are_pinned(name: str) -> None:
    spec = SPECS[name]()
    ops: list[Op[Any]] = spec.ops
    actual = {(op.token or spec.token, op.name): (op.request.__name__, op.response.__name__, op.scope) for op in ops}
    assert actual == PINNED[name]
    assert all(op.description for op in ops)
    assert (spec.name, spec.token) == (f"esdb-{name}", name)
    version = spec.version.split(".")
    assert len(version) == 3 and all(p.isdigit() for p in version)


def test_health_subjects_use_the_store_less_token_only_for_check() -> None:
    spec = SPECS["health"]()
    s = Subjects()
    subjects = [
        s.api("_", op.token or spec.token, op.name)
        if op.scope == "global"
        else s.api_endpoint(op.token or spec.token, op.name)
        for op in spec.ops
    ]
    assert subjects == SUBJECTS["health"]
