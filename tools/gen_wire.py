"""Write the golden wire files in tests/wire/: requests, replies and errors of the stream and
subscription services, in JSON and in msgpack.

    .venv/bin/python tools/gen_wire.py           # (re)generate tests/wire/
    .venv/bin/python tools/gen_wire.py --check   # exit 1 if the checked-in files are stale

The requests are written here (``CASES``) and validated with the op's request model from the
services' op tables before anything is sent. The tool then starts its own nats-server (port 0,
temporary folder) and the two services, runs the cases in order against a fresh store — once
with JSON bodies and once, in a second fresh store, with msgpack bodies — checks every reply
against the op's reply model (or the error envelope) and writes the bytes the codecs produce.
Fields that differ from run to run (server timestamps, creation times, lag) are set to fixed
values in the files; ``tests/wire/cases.json`` lists them as volatile, with positions and the
store name, so the live test compares their type only.

Files: ``tests/wire/<case>.request.<json|msgpack>`` and ``<case>.reply.<…>`` (or
``<case>.error.<…>`` for an error reply), where ``<case>`` is ``<service>.<op>`` plus a suffix
for a second example of the same op. The JSON files are exactly what the JSON codec writes
(compact, UTF-8), so decoding and encoding a file gives back the same bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import nats  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from esdb_gater.services import start_services  # noqa: E402
from esdb_gater.services.stream.service import OPS as STREAM_OPS  # noqa: E402
from esdb_gater.services.subscription.service import OPS as SUBSCRIPTION_OPS  # noqa: E402
from esdb_gater.shared.core.codec import CONTENT_TYPE_HEADER, JSON, MSGPACK, Codec  # noqa: E402
from esdb_gater.shared.core.errors import ERROR_CODE_HEADER  # noqa: E402
from esdb_gater.shared.core.settings import Settings  # noqa: E402
from esdb_gater.shared.runtime.endpoint import Op  # noqa: E402
from esdb_gater.shared.tooling.natsserver import NatsServer  # noqa: E402

OUT = ROOT / "tests" / "wire"
CODECS: dict[str, Codec] = {"json": JSON, "msgpack": MSGPACK}
STORE = "wire"  # the store of the recorded run; the live test uses a fresh one
FAR_FUTURE_US = 4_102_444_800_000_000  # 2100-01-01, epoch µs: "up to now" for temporal reads
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"  # binary event data: base64 in JSON, bin in msgpack

# Fields whose value changes from run to run, wherever they appear in a reply (their golden
# value is fixed below; the live test checks the type only).
VOLATILE_FIELDS: dict[str, Any] = {
    "timestamp": 1796095781897,
    "epoch_us": 1796095781897791,
    "created_at": 1796095781897,
    "lag_seconds": 0.0,
    "store": STORE,  # the store's name: each run uses its own store
}
# Also volatile: positions (store-wide, they depend on what was appended before).
VOLATILE_NAMES = ["position", "checkpoint_position", *VOLATILE_FIELDS]


def _ev(eid: str, etype: str, data: Any, **more: Any) -> dict[str, Any]:
    return {"event_id": eid, "event_type": etype, "data": data, **more}


ORDER_EVENTS = [
    _ev("0190f1a2-0000-7000-8000-000000000001", "OrderPlaced", {"sku": "A-1", "qty": 2}),
    _ev(
        "0190f1a2-0000-7000-8000-000000000002",
        "ItemAdded",
        {"sku": "B-7", "qty": 1},
        metadata={"correlation_id": "c-1"},
        tags=["promo"],
    ),
]
SUBSCRIPTION = {"type": "stream", "selector": "order-1", "name": "audit"}
UUID7 = "0190f1a2-0000-7000-8000-0000000000"  # + two digits: the golden event ids

# (case, service token, op, request body, "reply" | "error", extra volatile names)
CASES: list[tuple[str, str, str, dict[str, Any], str, list[str]]] = [
    ("store.create", "store", "create", {"storage": "file", "duplicate_window_s": 120}, "reply", []),
    ("store.info", "store", "info", {}, "reply", []),
    (
        "stream.append",
        "stream",
        "append",
        {"stream_id": "order-1", "expected_version": -1, "events": ORDER_EVENTS},
        "reply",
        [],
    ),
    (
        "stream.append-wrong_expected_version",
        "stream",
        "append",
        {
            "stream_id": "order-1",
            "expected_version": 0,
            "events": [_ev("0190f1a2-0000-7000-8000-000000000003", "OrderShipped", {"carrier": "DHL"})],
        },
        "error",
        [],
    ),
    (
        "stream.append-exact",
        "stream",
        "append",
        {
            "stream_id": "order-1",
            "expected_version": 1,
            "events": [_ev("0190f1a2-0000-7000-8000-000000000003", "OrderShipped", {"carrier": "DHL"})],
        },
        "reply",
        [],
    ),
    (
        "stream.append-binary",
        "stream",
        "append",
        {
            "stream_id": "avatar-7",
            "events": [
                _ev("0190f1a2-0000-7000-8000-000000000004", "AvatarUploaded", PNG, data_content_type="image/png")
            ],
        },
        "reply",
        [],
    ),
    (
        "stream.append-invalid",
        "stream",
        "append",
        {"stream_id": "order-1", "expected_verison": 2, "events": [{"event_type": "Typo"}]},
        "error",
        ["error.details", "error.message"],  # pydantic's wording
    ),
    ("stream.read", "stream", "read", {"stream_id": "order-1", "start_version": 0, "count": 10}, "reply", []),
    ("stream.forward", "stream", "forward", {"stream_id": "order-1", "start_version": 1, "count": 10}, "reply", []),
    ("stream.forward-binary", "stream", "forward", {"stream_id": "avatar-7"}, "reply", []),
    (
        "stream.forward-stream_not_found",
        "stream",
        "forward",
        {"stream_id": "no-such-stream", "start_version": 0, "count": 10},
        "error",
        [],
    ),
    ("stream.backward", "stream", "backward", {"stream_id": "order-1", "start_version": -1, "count": 2}, "reply", []),
    ("stream.version", "stream", "version", {"stream_id": "order-1"}, "reply", []),
    ("stream.exists", "stream", "exists", {"stream_id": "order-1"}, "reply", []),
    ("stream.list", "stream", "list", {"limit": 10}, "reply", []),
    ("stream.read_until", "stream", "read_until", {"stream_id": "order-1", "timestamp": FAR_FUTURE_US}, "reply", []),
    (
        "stream.read_range",
        "stream",
        "read_range",
        {"stream_id": "order-1", "from_ts": 0, "to_ts": FAR_FUTURE_US, "direction": "backward", "limit": 2},
        "reply",
        [],
    ),
    ("stream.version_at", "stream", "version_at", {"stream_id": "order-1", "timestamp": FAR_FUTURE_US}, "reply", []),
    (
        "stream.append_multi",
        "stream",
        "append_multi",
        {
            "appends": [
                {
                    "stream_id": "order-2",
                    "expected_version": -1,
                    "events": [_ev(f"{UUID7}05", "OrderPlaced", {"sku": "C"})],
                },
                {"stream_id": "invoice-2", "expected_version": -1, "events": [_ev(f"{UUID7}06", "Invoiced", {"n": 2})]},
            ],
            "checkpoint": {"name": "billing", "position": 1},
        },
        "reply",
        ["first_notification_id"],  # position << 14
    ),
    (
        "stream.append_multi-wrong_expected_version",
        "stream",
        "append_multi",
        {
            "appends": [
                {"stream_id": "order-2", "expected_version": -1, "events": [_ev(f"{UUID7}07", "OrderPlaced", {})]},
                {"stream_id": "invoice-9", "expected_version": -1, "events": [_ev(f"{UUID7}08", "Invoiced", {})]},
            ],
            "checkpoint": {"name": "billing", "position": 1},
        },
        "error",
        [],
    ),
    ("stream.checkpoint", "stream", "checkpoint", {"name": "billing"}, "reply", []),
    (
        "stream.read_all",
        "stream",
        "read_all",
        {"direction": "backward", "limit": 2},
        "reply",
        ["notification_id", "next", "last_notification_id"],  # position << 14 | index
    ),
    (
        "subscription.save",
        "subscription",
        "save",
        {**SUBSCRIPTION, "start_from": "start", "subscriber": "wire.audit", "ack_wait_ms": 600_000},
        "reply",
        ["checkpoint", "lag_events", "active", "parked"],  # the driver starts delivering at once
    ),
    (
        "subscription.save-already_exists",
        "subscription",
        "save",
        {**SUBSCRIPTION, "start_from": "end", "subscriber": "wire.other"},
        "error",
        [],
    ),
    (
        "subscription.ack",
        "subscription",
        "ack",
        {"stream_id": "order-1", "subscription_name": "audit", "event_number": 0},
        "reply",
        [],
    ),
    ("subscription.get", "subscription", "get", {"name": "audit"}, "reply", ["checkpoint", "lag_events", "active"]),
    ("subscription.list", "subscription", "list", {}, "reply", ["checkpoint", "lag_events", "active"]),
    ("subscription.replay_parked", "subscription", "replay_parked", {"name": "audit"}, "reply", []),
    ("subscription.get-not_found", "subscription", "get", {"name": "nobody"}, "error", []),
    ("subscription.remove", "subscription", "remove", SUBSCRIPTION, "reply", []),
    ("stream.delete", "stream", "delete", {"stream_id": "avatar-7"}, "reply", []),
    # how much a rebuild reads and writes depends on the background repair's progress (ADR 0017)
    ("store.reindex", "store", "reindex", {}, "reply", ["scanned", "indexed", "checkpoint"]),
]


def op_table() -> dict[tuple[str, str], Op[Any]]:
    """(service token, op) -> Op, from the services' own op tables."""
    table: dict[tuple[str, str], Op[Any]] = {}
    for token, ops in (("stream", STREAM_OPS), ("subscription", SUBSCRIPTION_OPS)):
        for op in ops:
            table[(op.token or token, op.name)] = op
    return table


def normalise(value: Any) -> Any:
    """The reply with volatile fields set to their fixed golden values."""
    if isinstance(value, dict):
        return {k: (VOLATILE_FIELDS[k] if k in VOLATILE_FIELDS else normalise(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [normalise(v) for v in value]
    return value


async def record(url: str, store: str, codec: Codec) -> list[tuple[bytes, bytes, bool]]:
    """Send every case in order; (request bytes, normalised reply bytes, is_error) per case."""
    nc = await nats.connect(url)
    out = []
    try:
        for _name, token, op, body, _kind, _vol in CASES:
            data = codec.encode(body)
            headers = {CONTENT_TYPE_HEADER: MSGPACK.content_type} if codec is MSGPACK else None
            msg = await nc.request(f"esdb.api.{store}.{token}.{op}", data, timeout=10, headers=headers)
            reply = codec.decode(msg.data)
            out.append((data, codec.encode(normalise(reply)), bool(msg.headers and ERROR_CODE_HEADER in msg.headers)))
            if (token, op) == ("subscription", "save") and not out[-1][2]:
                await asyncio.sleep(0.5)  # let the driver pick it up, so later replies settle
    finally:
        await nc.drain()
    return out


async def generate() -> dict[str, bytes]:
    """Every golden file's name and bytes."""
    table = op_table()
    for name, token, op, body, kind, _ in CASES:
        model = table[(token, op)].request
        if kind == "reply":
            model.model_validate(body)  # a golden success request must be valid as written
        elif name.endswith("-invalid"):
            try:
                model.model_validate(body)
            except ValueError:
                pass
            else:
                raise SystemExit(f"{name}: meant to be invalid, but validates")
    files: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="gen-wire-") as tmp, NatsServer(data_dir=tmp) as server:
        settings = Settings(nats_url=server.url, auto_create_stores=False, lease_ttl_s=1.0)
        running = await start_services(["stream", "subscription"], settings)
        try:
            for ext, codec in CODECS.items():
                store = STORE if ext == "json" else f"{STORE}-msgpack"
                recorded = await record(server.url, store, codec)
                for (name, _t, _o, _b, kind, _v), (req, rep, is_error) in zip(CASES, recorded, strict=True):
                    if is_error != (kind == "error"):
                        raise SystemExit(f"{name} ({ext}): expected a {kind}, got {codec.decode(rep)!r}")
                    files[f"{name}.request.{ext}"] = req
                    files[f"{name}.{kind}.{ext}"] = rep
        finally:
            await running.stop()
    manifest = {
        "about": "Golden requests and replies; generated by tools/gen_wire.py, checked by tests/wire/test_wire.py",
        "volatile": VOLATILE_NAMES,
        "cases": [
            {"case": name, "service": token, "op": op, "expect": kind, "volatile": vol}
            for name, token, op, _b, kind, vol in CASES
        ],
    }
    files["cases.json"] = (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode()
    return files


def validate_reply(op: Op[Any], kind: str, body: Any) -> None:
    from tools.gen_schemas import ErrorEnvelope  # the error envelope's model

    model: type[BaseModel] = ErrorEnvelope if kind == "error" else op.response
    model.model_validate(body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if tests/wire/ differs from a fresh run")
    args = parser.parse_args(argv)
    files = asyncio.run(generate())
    table = op_table()
    for name, token, op, _b, kind, _v in CASES:
        for ext, codec in CODECS.items():
            validate_reply(table[(token, op)], kind, codec.decode(files[f"{name}.{kind}.{ext}"]))
    if args.check:
        stale = [n for n, data in files.items() if not (OUT / n).exists() or (OUT / n).read_bytes() != data]
        extra = [p.name for p in OUT.glob("*") if p.suffix in (".json", ".msgpack") and p.name not in files]
        if stale or extra:
            print(f"tests/wire/ is stale: {', '.join(sorted(stale + extra))}; run tools/gen_wire.py", file=sys.stderr)
            return 1
        print(f"tests/wire/: {len(files)} files up to date")
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    for n, data in files.items():
        (OUT / n).write_bytes(data)
    print(f"wrote {len(files)} files to {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
