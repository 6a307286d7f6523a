"""KV buckets read without a consumer, and the snapshot bucket's keys.

nats-py's ``kv.watch`` creates an ephemeral consumer per listing, which the server keeps for a
while after it stops; services that list their definitions every second would keep dozens alive.
A listing here is ``STREAM.INFO`` with a subject filter (the subjects, one request per 100 000),
then batched Direct Gets ``multi_last`` (``MULTI_LAST_LIMIT`` values per request).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from esdb_gater.shared.core.subjects import Subjects, kv_token
from esdb_gater.shared.log.jetstream import ERR_STREAM_NOT_FOUND, JetStreamApiError, StoredMsg
from esdb_gater.shared.log.port import LogPort

__all__ = [
    "H_KV_OP",
    "MULTI_LAST_LIMIT",
    "KvValue",
    "SubjectList",
    "is_deleted",
    "kv_values",
    "last_msgs",
    "snapshot_key",
    "snapshot_keys",
    "snapshot_version",
    "stream_subjects",
]

MULTI_LAST_LIMIT: Final = 1024  # subjects per multi_last Direct Get the server answers
H_KV_OP: Final = "KV-Operation"  # DEL or PURGE on a KV delete marker


@dataclass(slots=True, frozen=True)
class SubjectList:
    subjects: list[str]
    last_seq: int  # the stream's last sequence when the first page was read


async def stream_subjects(log: LogPort, stream: str, subjects_filter: str) -> SubjectList | None:
    """The subjects of ``stream`` matching ``subjects_filter`` that hold a message (paged by
    ``STREAM.INFO`` at 100 000); None when the stream does not exist."""
    subjects: list[str] = []
    last_seq = 0
    offset = 0
    while True:
        try:
            si = await log.stream_info(stream, subjects_filter=subjects_filter, offset=offset)
        except JetStreamApiError as exc:
            if exc.err_code == ERR_STREAM_NOT_FOUND:
                return None
            raise
        state = si.get("state", {})
        if offset == 0:
            last_seq = int(state.get("last_seq", 0))
        page = list(state.get("subjects") or {})
        subjects.extend(page)
        offset += len(page)
        if not page or offset >= int(si.get("total", len(page))):
            return SubjectList(subjects, last_seq)


async def last_msgs(log: LogPort, stream: str, subjects: list[str]) -> list[StoredMsg]:
    """The last message of each subject (batched Direct Gets ``multi_last``); subjects with no
    message are left out."""
    out: list[StoredMsg] = []
    for i in range(0, len(subjects), MULTI_LAST_LIMIT):
        group = subjects[i : i + MULTI_LAST_LIMIT]
        msgs, _ = await log.direct_batch(stream, {"multi_last": group, "batch": len(group)})
        out.extend(msgs)
    return out


def is_deleted(sm: StoredMsg) -> bool:
    """A KV delete or purge marker (or an empty value)."""
    return sm.headers.get(H_KV_OP) in ("DEL", "PURGE") or not sm.data


@dataclass(slots=True, frozen=True)
class KvValue:
    key: str
    value: bytes
    revision: int


async def kv_values(log: LogPort, bucket: str, key_filter: str) -> list[KvValue]:
    """The live keys of a KV bucket matching ``key_filter`` (e.g. ``def.>``) and their values;
    keys whose last message is a delete or purge marker are left out."""
    stream = Subjects.kv_stream(bucket)
    head = Subjects.kv_subject(bucket, "")
    listing = await stream_subjects(log, stream, head + key_filter)
    if listing is None:
        return []
    msgs = await last_msgs(log, stream, listing.subjects)
    return [KvValue(sm.subject[len(head) :], sm.data, sm.seq) for sm in msgs if not is_deleted(sm)]


# --- the snapshot bucket's keys (docs/adr/0005-snapshots.md; the scavenger reads them too) ------------


def snapshot_key(source: str, stream: str, version: int) -> str:
    """``<kv_token(source)>.<kv_token(stream)>.<version, 20 digits>``: keys sort by version."""
    return f"{kv_token(source)}.{kv_token(stream)}.{version:020d}"


def snapshot_keys(source: str | None, stream: str) -> str:
    """The key filter of every snapshot of (source, stream); any source when ``source`` is None."""
    return f"{'*' if source is None else kv_token(source)}.{kv_token(stream)}.*"


def snapshot_version(subject: str) -> int | None:
    """The version of a snapshot key (or its KV subject); None when it ends in no version."""
    tail = subject.rsplit(".", 1)[-1]
    return int(tail) if tail.isascii() and tail.isdigit() else None
