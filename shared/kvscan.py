"""The current values of the keys under a prefix of a JetStream KV bucket, without a consumer.

nats-py's ``kv.watch`` creates an ephemeral consumer for every listing, and the server keeps each
one for a while after it is stopped; services that list their definitions every second (link
supervisors, the scavenger's scheduler) would keep dozens alive. Here a listing is two requests:
``STREAM.INFO`` with a subject filter (the keys, one request per 100 000) and batched Direct Gets
``multi_last`` (the values, 1024 keys per request). Deleted and purged keys (whose last message
is a KV tombstone) are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from shared.jetstream import ERR_STREAM_NOT_FOUND, JetStreamApiError, Log
from shared.subjects import Subjects

__all__ = ["KvValue", "kv_values"]

MULTI_LAST_LIMIT: Final = 1024  # subjects per multi_last Direct Get the server answers
_H_KV_OP: Final = "KV-Operation"


@dataclass(frozen=True, slots=True)
class KvValue:
    key: str
    value: bytes
    revision: int


async def kv_values(log: Log, bucket: str, prefix: str) -> list[KvValue]:
    """Every live key of ``bucket`` matching ``prefix`` (a KV key filter such as ``def.>``)."""
    stream = Subjects.kv_stream(bucket)
    subject_filter = Subjects.kv_subject(bucket, prefix)
    head = len(Subjects.kv_subject(bucket, ""))
    subjects: list[str] = []
    offset = 0
    while True:
        try:
            si = await log.api(f"$JS.API.STREAM.INFO.{stream}", {"subjects_filter": subject_filter, "offset": offset})
        except JetStreamApiError as exc:
            if exc.err_code == ERR_STREAM_NOT_FOUND:
                return []
            raise
        page = list(si.get("state", {}).get("subjects") or {})
        subjects.extend(page)
        offset += len(page)
        if not page or offset >= int(si.get("total", len(page))):
            break
    out: list[KvValue] = []
    for i in range(0, len(subjects), MULTI_LAST_LIMIT):
        group = subjects[i : i + MULTI_LAST_LIMIT]
        msgs, _ = await log.direct_batch(stream, {"multi_last": group, "batch": len(group)})
        for sm in msgs:
            if sm.headers.get(_H_KV_OP) in ("DEL", "PURGE") or not sm.data:
                continue
            out.append(KvValue(sm.subject[head:], sm.data, sm.seq))
    return out
