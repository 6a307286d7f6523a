"""The link service's op table: one line per subject."""

from __future__ import annotations

from typing import Final

from nats.aio.client import Client

from esdb_gater.services.link import handlers as h
from esdb_gater.services.link.driver import MemoryLevel, Supervisor
from esdb_gater.services.link.store import LinkStore
from esdb_gater.shared.core.settings import Settings
from esdb_gater.shared.core.subjects import Subjects
from esdb_gater.shared.log.jetstream import Log
from esdb_gater.shared.models import link as m
from esdb_gater.shared.models.common import OkResponse
from esdb_gater.shared.runtime.endpoint import Op, ServiceSpec
from esdb_gater.shared.runtime.memory import MemoryMonitor
from esdb_gater.shared.runtime.runner import Build, Resource

VERSION = "0.1.0"

OPS: list[Op[h.LinkCtx]] = [
    Op("create", h.create, m.CreateLinkRequest, m.LinkInfo, "define a link (does not start it)"),
    Op("start", h.start, m.LinkNameRequest, m.LinkInfo, "start forwarding: backfill, then live"),
    Op("stop", h.stop, m.LinkNameRequest, m.LinkInfo, "stop forwarding (resumes where it stopped)"),
    Op("delete", h.delete, m.DeleteLinkRequest, OkResponse, "stop and remove a link (keeps $link:<name> unless asked)"),
    Op("get", h.get, m.LinkNameRequest, m.LinkInfo, "one link"),
    Op("list", h.list_, m.ListLinksRequest, m.LinksResponse, "every link of the store"),
    Op("info", h.info, m.LinkNameRequest, m.LinkInfo, "a link with its progress (link_info)"),
]


def spec(links: LinkStore, supervisor: Supervisor, lease_ttl_s: float, prefix: str = "esdb") -> ServiceSpec[h.LinkCtx]:
    return ServiceSpec(
        name=f"{prefix}-link",
        token="link",
        version=VERSION,
        description="Stream links: derived streams $link:<name> with declarative filter and transform",
        ops=OPS,
        make_ctx=lambda store: h.LinkCtx(store=store, links=links, supervisor=supervisor, lease_ttl_s=lease_ttl_s),
    )


async def build(nc: Client, settings: Settings) -> tuple[ServiceSpec[h.LinkCtx], list[Resource]]:
    """Construct the service over a connection: (spec, resources to stop on the way out)."""
    subjects = Subjects(settings.subject_prefix)
    log = Log(nc, timeout=settings.request_timeout_s)
    await log.start()
    links = LinkStore(nc, log, subjects, settings)
    await links.open()
    supervisor = Supervisor(
        nc,
        links,
        subjects,
        owner=nc._nuid.next().decode(),
        lease_ttl_s=settings.lease_ttl_s,
        memory_level=_memory_level(settings),
    )
    await supervisor.start()
    return spec(links, supervisor, settings.lease_ttl_s, settings.service_name_prefix), [supervisor, log]


def _memory_level(settings: Settings) -> MemoryLevel:
    """The process's memory level (shared/runtime/memory.py): link backfill slows down under pressure."""
    mem = settings.memory
    monitor = MemoryMonitor(
        elevated=mem.elevated,
        critical=mem.critical,
        limit_bytes=mem.limit_bytes,
        sample_interval_s=mem.sample_interval_s,
    )
    return monitor.level


BUILD: Final[Build] = build
