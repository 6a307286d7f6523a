"""An in-memory ``LogPort``: one nats-server's JetStream, for fast tests of store and handler logic.

``tests/contract/`` runs the same behaviours against it and a real server. What it models: streams
(subjects with wildcards, overlap checks, idempotent create, ``max_msgs``, ``max_msgs_per_subject``,
``max_age``, the duplicate window, ``allow_direct``), publish with ``Nats-Msg-Id`` and the
``Nats-Expected-Last-Subject-Sequence`` / ``Nats-Expected-Last-Sequence`` checks (in the server's
order: expectations first, then de-duplication), Direct Get single and batched (``next_by_subj``,
``start_time``, ``multi_last`` with ``up_to_seq``, ``max_bytes`` counted as the server counts),
``STREAM.MSG.GET``, purge by subject / ``seq`` / ``keep``, stream listing, and the server's error
codes and descriptions. Anything else raises ``NotImplementedError`` rather than answer wrongly: a
config option it does not model with a non-default value, another ``Nats-*`` publish header, an
unknown request field. No I/O, no awaits: each call is atomic, as on the server.
"""

from __future__ import annotations

import copy
import re
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Final

from esdb_gater.shared.core.errors import PayloadTooLargeError, UnavailableError
from esdb_gater.shared.log.jetstream import (
    ERR_BAD_REQUEST,
    ERR_REPLICAS_NOT_SUPPORTED,
    ERR_STREAM_INVALID_CONFIG,
    ERR_STREAM_NAME_IN_USE,
    ERR_STREAM_NOT_FOUND,
    ERR_SUBJECTS_OVERLAP,
    ERR_WRONG_LAST_SEQUENCE,
    H_EXPECTED_LAST_SUBJECT_SEQ,
    H_MSG_ID,
    JetStreamApiError,
    parse_ts_ns,
)
from esdb_gater.shared.log.port import (
    BatchGet,
    LogPort,
    MsgGet,
    PubAck,
    StoredMsg,
    StreamInfo,
    StreamList,
    StreamNames,
    StreamState,
)

__all__ = ["FakeClock", "FakeLog", "subject_matches", "subjects_collide"]

H_EXPECTED_LAST_SEQ: Final = "Nats-Expected-Last-Sequence"
_MODELLED_HEADERS: Final = frozenset({H_MSG_ID, H_EXPECTED_LAST_SUBJECT_SEQ, H_EXPECTED_LAST_SEQ})
DEFAULT_MAX_PAYLOAD: Final = 1024 * 1024  # nats-server's default max_payload
SERVER_MAX_PENDING: Final = 64 * 1024 * 1024  # a Direct Get without max_bytes stops here
NAMES_LIMIT: Final = 1024
LIST_LIMIT: Final = 256
SUBJECTS_LIMIT: Final = 100_000
MULTI_LAST_LIMIT: Final = 1024
DEFAULT_DUPLICATE_WINDOW_NS: Final = 120_000_000_000
MIN_WINDOW_NS: Final = 100_000_000

# JetStream's stream config defaults (as STREAM.INFO shows them); the fake enforces the options
# in _ENFORCED and accepts the others only at a value that changes nothing it models.
_DEFAULTS: Final[dict[str, Any]] = {
    "retention": "limits",
    "max_consumers": -1,
    "max_msgs": -1,
    "max_bytes": -1,
    "max_age": 0,
    "max_msgs_per_subject": -1,
    "max_msg_size": -1,
    "discard": "old",
    "storage": "file",
    "num_replicas": 1,
    "compression": "none",
    "allow_direct": False,
    "mirror_direct": False,
    "sealed": False,
    "deny_delete": False,
    "deny_purge": False,
    "allow_rollup_hdrs": False,
    "consumer_limits": {},
    "allow_msg_ttl": False,
}
_FREE: Final = frozenset(
    {"name", "description", "subjects", "metadata", "storage", "num_replicas", "compression", "max_consumers"}
    | {"allow_direct", "deny_delete", "allow_rollup_hdrs", "consumer_limits", "allow_msg_ttl", "discard"}
    | {"max_msgs", "max_msgs_per_subject", "max_age", "duplicate_window"}
    | {"allow_atomic"}  # kept, not modelled: the fake has no atomic batches (stream.append_multi)
)
_NEGATIVE_IS_UNLIMITED: Final = ("max_consumers", "max_msgs", "max_bytes", "max_msgs_per_subject", "max_msg_size")
_GET_KEYS: Final = frozenset(MsgGet.__annotations__)
_BATCH_KEYS: Final = frozenset(BatchGet.__annotations__)
_RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")


class FakeClock:
    """Wall-clock nanoseconds that a test can move forward (``advance``) without waiting."""

    def __init__(self, start_ns: int | None = None) -> None:
        self._offset = 0 if start_ns is None else start_ns - time.time_ns()

    def __call__(self) -> int:
        return time.time_ns() + self._offset

    def advance(self, seconds: float) -> None:
        self._offset += int(seconds * 1e9)


# --- subjects -------------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _tokens(subject: str) -> tuple[str, ...]:
    return tuple(subject.split("."))


@lru_cache(maxsize=65536)
def subject_matches(filter_: str, subject: str) -> bool:
    """NATS subject matching: ``*`` is one token, ``>`` one or more at the end."""
    f, s = _tokens(filter_), _tokens(subject)
    for i, tok in enumerate(f):
        if tok == ">":
            return len(s) > i
        if i >= len(s) or (tok != "*" and tok != s[i]):
            return False
    return len(s) == len(f)


def subjects_collide(a: str, b: str) -> bool:
    """Whether some subject matches both filters."""
    ta, tb = _tokens(a), _tokens(b)
    for x, y in zip(ta, tb, strict=False):
        if x == ">" or y == ">":
            return True
        if x != "*" and y != "*" and x != y:
            return False
    return len(ta) == len(tb)


def _wild(subject: str) -> bool:
    return "*" in subject or ">" in subject


@lru_cache(maxsize=1024)
def _second(sec: int) -> str:
    return f"{datetime.fromtimestamp(sec, UTC):%Y-%m-%dT%H:%M:%S}"


def _rfc3339nano(ns: int) -> str:
    """Go's ``time.RFC3339Nano`` (trailing zeros of the fraction dropped), as the server writes it."""
    sec, frac = divmod(ns, 1_000_000_000)
    text = _second(sec)
    digits = f"{frac:09d}".rstrip("0")
    return f"{text}.{digits}Z" if digits else f"{text}Z"


def _header_size(headers: Mapping[str, str]) -> int:
    """The bytes of the header block nats-py sends (``NATS/1.0``, one line per header, blank line);
    none for no headers (Log sends none then)."""
    if not headers:
        return 0
    return 12 + sum(len(k.encode()) + len(v.encode()) + 4 for k, v in headers.items())


def _api_error(code: int, description: str, status: int = 400) -> JetStreamApiError:
    return JetStreamApiError(code, description, status)


def _direct_error(status: int, text: str) -> JetStreamApiError:
    """What ``Log`` raises for a Direct Get answered with an error status."""
    return JetStreamApiError(0, f"direct get failed: {status} {text}")


def _no_responders(what: str, name: str) -> UnavailableError:
    return UnavailableError("JetStream did not answer (no responders)", details={what: name})


def _uint(value: str) -> int:
    """The server's ``parseInt64``: -1 for anything that is not a decimal number."""
    return int(value) if value.isdigit() else -1


# --- the store ------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Msg:
    subject: str
    seq: int
    ts_ns: int
    headers: dict[str, str]
    data: bytes
    size: int  # what a Direct Get counts against max_bytes: subject, header block, data


@dataclass(slots=True)
class _Stream:
    config: dict[str, Any]
    created_ns: int
    msgs: dict[int, _Msg] = field(default_factory=dict)
    seqs: list[int] = field(default_factory=list)  # the stored sequences, ascending
    by_subject: dict[str, list[int]] = field(default_factory=dict)  # subject -> its sequences, ascending
    last_seq: int = 0
    dedupe: dict[str, tuple[int, int]] = field(default_factory=dict)  # msg id -> (seq, ts ns), oldest first

    @property
    def name(self) -> str:
        return str(self.config["name"])

    @property
    def first_seq(self) -> int:
        if self.seqs:
            return self.seqs[0]
        return self.last_seq + 1 if self.last_seq else 0

    def remove(self, seq: int) -> None:
        m = self.msgs.pop(seq)
        del self.seqs[bisect_left(self.seqs, seq)]
        on_subject = self.by_subject[m.subject]
        del on_subject[bisect_left(on_subject, seq)]
        if not on_subject:
            del self.by_subject[m.subject]

    def matching(self, filter_: str | None, start: int) -> Iterator[_Msg]:
        """Stored messages at or after ``start`` on ``filter_`` (None: all), ascending."""
        if filter_ is not None and not _wild(filter_):
            seqs = self.by_subject.get(filter_, [])
            for seq in seqs[bisect_left(seqs, start) :]:
                yield self.msgs[seq]
            return
        for seq in self.seqs[bisect_left(self.seqs, start) :]:
            m = self.msgs[seq]
            if filter_ is None or subject_matches(filter_, m.subject):
                yield m

    def last_on(self, filter_: str, up_to: int | None = None) -> _Msg | None:
        if not _wild(filter_):
            seqs = self.by_subject.get(filter_, [])
            i = len(seqs) if up_to is None else bisect_left(seqs, up_to + 1)
            return self.msgs[seqs[i - 1]] if i else None
        best: _Msg | None = None
        for subject, seqs in self.by_subject.items():
            if not subject_matches(filter_, subject):
                continue
            i = len(seqs) if up_to is None else bisect_left(seqs, up_to + 1)
            if i and (best is None or seqs[i - 1] > best.seq):
                best = self.msgs[seqs[i - 1]]
        return best

    def seq_from_time(self, ts_ns: int) -> int:
        """The first message at or after ``ts_ns`` (the last sequence + 1 when none is)."""
        for seq in self.seqs:
            if self.msgs[seq].ts_ns >= ts_ns:
                return seq
        return self.last_seq + 1


class FakeLog:
    """JetStream in memory (see the module docstring). ``clock``: unix nanoseconds, for the
    messages' timestamps, ``max_age`` and the duplicate window; ``max_payload``: the connection's."""

    def __init__(self, clock: Callable[[], int] = time.time_ns, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self.clock = clock
        self.max_payload = max_payload
        self._streams: dict[str, _Stream] = {}

    # --- streams ------------------------------------------------------------------------------
    def _stream(self, name: str) -> _Stream:
        st = self._streams.get(name)
        if st is None:
            raise _api_error(ERR_STREAM_NOT_FOUND, "stream not found", 404)
        self._expire(st)
        return st

    def _expire(self, st: _Stream) -> None:
        max_age = int(st.config["max_age"])
        if max_age > 0:
            oldest = self.clock() - max_age
            while st.seqs and st.msgs[st.seqs[0]].ts_ns <= oldest:
                st.remove(st.seqs[0])

    def _info(self, st: _Stream, subjects_filter: str | None = None, offset: int = 0) -> StreamInfo:
        state: StreamState = {"messages": len(st.seqs), "first_seq": st.first_seq, "last_seq": st.last_seq}
        if st.by_subject:  # JetStream leaves it out when 0
            state["num_subjects"] = len(st.by_subject)
        info: StreamInfo = {"config": copy.deepcopy(st.config), "state": state, "total": 0, "offset": 0, "limit": 0}
        if subjects_filter:
            found = sorted(s for s in st.by_subject if subject_matches(subjects_filter, s))
            if found:
                offset = min(max(offset, 0), len(found))
                page = found[offset : offset + SUBJECTS_LIMIT]
                if page:
                    state["subjects"] = {s: len(st.by_subject[s]) for s in page}
                info["total"], info["offset"], info["limit"] = len(found), offset, SUBJECTS_LIMIT
        return info

    async def stream_info(self, stream: str, *, subjects_filter: str | None = None, offset: int = 0) -> StreamInfo:
        return self._info(self._stream(stream), subjects_filter, offset)

    async def add_stream(self, config: Mapping[str, Any]) -> StreamInfo:
        cfg = _normalise(config)
        name = cfg["name"]
        existing = self._streams.get(name)
        if existing is not None:
            if existing.config != cfg:
                raise _api_error(ERR_STREAM_NAME_IN_USE, "stream name already in use with a different configuration")
            return self._info(existing)
        for other in self._streams.values():
            if any(subjects_collide(a, b) for a in cfg["subjects"] for b in other.config["subjects"]):
                raise _api_error(ERR_SUBJECTS_OVERLAP, "subjects overlap with an existing stream")
        st = _Stream(cfg, self.clock())
        self._streams[name] = st
        return self._info(st)

    def _filtered(self, subject: str | None) -> list[_Stream]:
        streams = sorted(self._streams.values(), key=lambda st: st.name)
        if subject is None:
            return streams
        return [st for st in streams if any(subjects_collide(subject, s) for s in st.config["subjects"])]

    async def stream_names(self, *, subject: str | None = None, offset: int = 0) -> StreamNames:
        streams = self._filtered(subject)
        offset = min(max(offset, 0), len(streams))
        page = [st.name for st in streams[offset : offset + NAMES_LIMIT]]
        return {"streams": page or None, "total": len(streams), "offset": offset, "limit": NAMES_LIMIT}

    async def list_streams(self, *, subject: str | None = None, offset: int = 0) -> StreamList:
        streams = self._filtered(subject)
        offset = min(max(offset, 0), len(streams))
        for st in streams:
            self._expire(st)
        page = [self._info(st) for st in streams[offset : offset + LIST_LIMIT]]
        for info in page:  # a listing carries no subject paging
            del info["total"], info["offset"], info["limit"]
        return {"streams": page, "total": len(streams), "offset": offset, "limit": LIST_LIMIT}

    async def purge(
        self, stream: str, *, subject: str | None = None, seq: int | None = None, keep: int | None = None
    ) -> int:
        seq, keep = seq or 0, keep or 0
        if seq > 0 and keep > 0:
            raise _api_error(ERR_BAD_REQUEST, "bad request")
        st = self._stream(stream)
        if seq == 1:
            return 0
        filter_ = None if subject in (None, "", ">") else subject
        victims = [m.seq for m in st.matching(filter_, 0) if seq == 0 or m.seq < seq]
        if keep > 0:
            victims = victims[: max(0, len(victims) - keep)]
        for s in victims:
            st.remove(s)
        return len(victims)

    # --- messages -----------------------------------------------------------------------------
    async def publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> PubAck:
        if len(payload) > self.max_payload:
            raise PayloadTooLargeError(
                "the record is larger than the server's max_payload", details={"size": len(payload)}
            )
        st = next(
            (st for st in self._streams.values() if any(subject_matches(f, subject) for f in st.config["subjects"])),
            None,
        )
        if st is None:
            raise _no_responders("subject", subject)
        stored = {k.strip(): v.strip() for k, v in headers.items()}
        for key in stored:
            if key.startswith("Nats-") and key not in _MODELLED_HEADERS:
                raise NotImplementedError(f"the fake log does not model the publish header {key}")
        self._expire(st)
        if H_EXPECTED_LAST_SUBJECT_SEQ in stored:
            on_subject = st.by_subject.get(subject)
            last = on_subject[-1] if on_subject else 0
            if _uint(stored[H_EXPECTED_LAST_SUBJECT_SEQ]) != last:
                raise _api_error(ERR_WRONG_LAST_SEQUENCE, f"wrong last sequence: {last}")
        if H_EXPECTED_LAST_SEQ in stored and _uint(stored[H_EXPECTED_LAST_SEQ]) != st.last_seq:
            raise _api_error(ERR_WRONG_LAST_SEQUENCE, f"wrong last sequence: {st.last_seq}")
        now = self.clock()
        window = int(st.config["duplicate_window"])
        msg_id = stored.get(H_MSG_ID)
        if msg_id:
            while st.dedupe:  # oldest first: drop what left the window
                old_id, (_, ts) = next(iter(st.dedupe.items()))
                if now - ts < window:
                    break
                del st.dedupe[old_id]
            seen = st.dedupe.get(msg_id)
            if seen is not None:
                return PubAck(seq=seen[0], duplicate=True)
        st.last_seq += 1
        seq = st.last_seq
        size = len(subject.encode()) + _header_size(stored) + len(payload)
        st.msgs[seq] = _Msg(subject, seq, now, stored, bytes(payload), size)
        st.seqs.append(seq)
        st.by_subject.setdefault(subject, []).append(seq)
        if msg_id and window > 0:
            st.dedupe[msg_id] = (seq, now)
        per_subject = int(st.config["max_msgs_per_subject"])
        if per_subject > 0:
            while len(st.by_subject[subject]) > per_subject:
                st.remove(st.by_subject[subject][0])
        max_msgs = int(st.config["max_msgs"])
        if max_msgs > 0:
            while len(st.seqs) > max_msgs:
                st.remove(st.seqs[0])
        return PubAck(seq=seq, duplicate=False)

    def _direct_stream(self, name: str) -> _Stream:
        st = self._streams.get(name)
        if st is None or not st.config["allow_direct"]:
            raise _no_responders("subject", f"$JS.API.DIRECT.GET.{name}")
        self._expire(st)
        return st

    @staticmethod
    def _start(st: _Stream, req: Mapping[str, Any]) -> int:
        start_time = req.get("start_time")
        if start_time is None:
            return int(req.get("seq", 0))
        if not _RFC3339_UTC.match(start_time):
            raise NotImplementedError(f"the fake log reads start_time in UTC only: {start_time!r}")
        return st.seq_from_time(parse_ts_ns(start_time))

    @staticmethod
    def _one(st: _Stream, req: Mapping[str, Any], seq: int) -> _Msg | None:
        """``LoadMsg`` / ``LoadNextMsg`` / ``LoadLastMsg``, as the server picks them."""
        nxt = req.get("next_by_subj")
        if seq > 0 and not nxt:
            return st.msgs.get(seq)
        if nxt:
            return next(st.matching(nxt, seq), None)
        return st.last_on(req["last_by_subj"])

    @staticmethod
    def _out(st: _Stream, m: _Msg, extra: dict[str, str] | None = None) -> StoredMsg:
        headers = {
            **m.headers,
            "Nats-Stream": st.name,
            "Nats-Subject": m.subject,
            "Nats-Sequence": str(m.seq),
            "Nats-Time-Stamp": _rfc3339nano(m.ts_ns),
        }
        if extra:
            headers.update(extra)
        return StoredMsg(m.subject, m.seq, m.ts_ns, headers, m.data)

    @staticmethod
    def _check_direct(req: Mapping[str, Any], allowed: frozenset[str]) -> None:
        unknown = set(req) - allowed
        if unknown:
            raise NotImplementedError(f"the fake log does not model Direct Get fields {sorted(unknown)}")
        seq, last, nxt = int(req.get("seq", 0)), req.get("last_by_subj"), req.get("next_by_subj")
        start, multi, batch = req.get("start_time"), req.get("multi_last"), int(req.get("batch", 0))
        if seq == 0 and not last and not nxt and not multi and start is None:
            raise _direct_error(408, "Empty Request")
        if (
            (seq > 0 and last)
            or (seq > 0 and start is not None)
            or (start is not None and last)
            or (last and nxt)
            or (last and batch > 0)
            or (last and multi)
            or (nxt and multi)
        ):
            raise _direct_error(408, "Bad Request")

    async def direct_get(self, stream: str, req: MsgGet) -> StoredMsg | None:
        st = self._direct_stream(stream)
        self._check_direct(req, _GET_KEYS)
        m = self._one(st, req, self._start(st, req))
        return None if m is None else self._out(st, m)

    async def direct_batch(self, stream: str, req: BatchGet) -> tuple[list[StoredMsg], int]:
        st = self._direct_stream(stream)
        self._check_direct(req, _BATCH_KEYS)
        max_bytes = int(req.get("max_bytes", 0)) or SERVER_MAX_PENDING
        if req.get("multi_last"):
            return self._multi_last(st, req, max_bytes)
        batch = int(req.get("batch", 0))
        if batch <= 0:
            raise ValueError("direct_batch needs batch > 0 (without it the server sends no end of batch)")
        found = list(st.matching(req.get("next_by_subj") or None, self._start(st, req)))
        out: list[StoredMsg] = []
        sent_bytes = 0
        last = 0
        for m in found[:batch]:
            pending = len(found) - len(out) - 1
            out.append(self._out(st, m, {"Nats-Num-Pending": str(pending), "Nats-Last-Sequence": str(last)}))
            last = m.seq
            sent_bytes += m.size
            if sent_bytes >= max_bytes:
                break
        return out, (len(found) - len(out) if out else 0)

    def _multi_last(self, st: _Stream, req: BatchGet, max_bytes: int) -> tuple[list[StoredMsg], int]:
        up_to = int(req.get("up_to_seq", 0)) or st.last_seq
        seqs: set[int] = set()
        for filter_ in req["multi_last"]:
            for subject, on_subject in st.by_subject.items():
                if subject_matches(filter_, subject):
                    i = bisect_left(on_subject, up_to + 1)
                    if i:
                        seqs.add(on_subject[i - 1])
            if len(seqs) > MULTI_LAST_LIMIT:
                raise _direct_error(413, "Too Many Results")
        if not seqs:
            return [], 0
        min_seq, batch = int(req.get("seq", 0)), int(req.get("batch", 0))
        pending = len(seqs)
        out: list[StoredMsg] = []
        sent_bytes = 0
        last = 0
        for seq in sorted(seqs):
            pending -= 1
            if seq < min_seq:
                continue
            m = st.msgs[seq]
            out.append(self._out(st, m, {"Nats-Num-Pending": str(pending), "Nats-Last-Sequence": str(last)}))
            last = m.seq
            sent_bytes += m.size
            if sent_bytes >= max_bytes or (batch > 0 and len(out) >= batch):
                break
        return out, pending

    async def leader_get(self, stream: str, req: MsgGet) -> StoredMsg | None:
        unknown = set(req) - _GET_KEYS
        if unknown:
            raise NotImplementedError(f"the fake log does not model message get fields {sorted(unknown)}")
        seq, last = int(req.get("seq", 0)), req.get("last_by_subj")
        nxt, start = req.get("next_by_subj"), req.get("start_time")
        if (
            (seq > 0 and last)
            or (seq == 0 and not last and not nxt and start is None)
            or (seq > 0 and start is not None)
            or (start is not None and last)
            or (last and nxt)
        ):
            raise _api_error(ERR_BAD_REQUEST, "bad request")
        st = self._stream(stream)
        m = self._one(st, req, self._start(st, req))
        return None if m is None else StoredMsg(m.subject, m.seq, m.ts_ns, dict(m.headers), m.data)


def _normalise(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config as the server keeps it (defaults filled in), or the server's refusal; an option
    the fake does not model, at a value that matters, is ``NotImplementedError``."""
    cfg = copy.deepcopy(dict(config))
    if "name" not in cfg:
        raise NotImplementedError("the fake log needs a stream name in the config")
    for key, value in _DEFAULTS.items():
        cfg.setdefault(key, copy.deepcopy(value))
    for key in _NEGATIVE_IS_UNLIMITED:
        if int(cfg[key]) <= 0:
            cfg[key] = -1
    if not cfg.get("subjects"):
        cfg["subjects"] = [cfg["name"]]
    cfg.setdefault("metadata", {})
    unmodelled = {k for k, v in cfg.items() if k not in _FREE and (k not in _DEFAULTS or v != _DEFAULTS[k])}
    if cfg["discard"] == "new" and int(cfg["max_msgs"]) > 0:
        unmodelled.add("discard")
    if unmodelled:
        raise NotImplementedError(f"the fake log does not model stream options {sorted(unmodelled)}")
    if int(cfg["num_replicas"]) > 1:
        raise _api_error(ERR_REPLICAS_NOT_SUPPORTED, "replicas > 1 not supported in non-clustered mode", 500)
    max_age = int(cfg["max_age"])
    if max_age < 0:
        raise _api_error(ERR_STREAM_INVALID_CONFIG, "max age can not be negative", 500)
    if 0 < max_age < MIN_WINDOW_NS:
        raise _api_error(ERR_STREAM_INVALID_CONFIG, "max age needs to be >= 100ms", 500)
    window = int(cfg.get("duplicate_window") or 0)
    if window == 0:
        window = min(max_age, DEFAULT_DUPLICATE_WINDOW_NS) if max_age else DEFAULT_DUPLICATE_WINDOW_NS
    if window < 0:
        raise _api_error(ERR_STREAM_INVALID_CONFIG, "duplicates window can not be negative", 500)
    if max_age and window > max_age:
        raise _api_error(ERR_STREAM_INVALID_CONFIG, "duplicates window can not be larger then max age", 500)
    if window < MIN_WINDOW_NS:
        raise _api_error(ERR_STREAM_INVALID_CONFIG, "duplicates window needs to be >= 100ms", 500)
    cfg["duplicate_window"] = window
    return cfg


_FAKE_IS_A_LOG_PORT: type[LogPort] = FakeLog  # mypy checks that FakeLog implements the port
