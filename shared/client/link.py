"""The link service's ops (seed names; docs/api/link.md)."""

from __future__ import annotations

from typing import Any

from esdb_gater.shared.client.transport import Transport
from esdb_gater.shared.models.link import LinkInfo

__all__ = ["LinkMethods"]


class LinkMethods(Transport):
    async def create_link(self, store: str, spec: dict[str, Any]) -> LinkInfo:
        """``create_link(store, spec)``: ``{name, source, filter?, transform?, backfill?}``. Not started."""
        return LinkInfo.model_validate(await self.request(store, "link", "create", spec))

    async def start_link(self, store: str, name: str) -> LinkInfo:
        return LinkInfo.model_validate(await self.request(store, "link", "start", {"name": name}))

    async def stop_link(self, store: str, name: str) -> LinkInfo:
        """Returns once no instance forwards the link any more."""
        return LinkInfo.model_validate(await self.request(store, "link", "stop", {"name": name}))

    async def delete_link(self, store: str, name: str, *, delete_stream: bool = False) -> None:
        """Stop and remove a link; ``$link:<name>`` stays unless ``delete_stream``."""
        await self.request(store, "link", "delete", {"name": name, "delete_stream": delete_stream})

    async def get_link(self, store: str, name: str) -> LinkInfo:
        return LinkInfo.model_validate(await self.request(store, "link", "get", {"name": name}))

    async def list_links(self, store: str) -> list[LinkInfo]:
        reply = await self.request(store, "link", "list", {})
        return [LinkInfo.model_validate(x) for x in reply["links"]]

    async def link_info(self, store: str, name: str) -> LinkInfo:
        return LinkInfo.model_validate(await self.request(store, "link", "info", {"name": name}))
