"""The documented requests, run in order against the session's services (issue 14).

Every ``nats req SUBJECT 'JSON'`` of the README's walk-through and of docs/api/*.md is sent in
the order the document shows it, and the reply block that follows it is compared with the real
reply. Each document runs in stores of its own: the store token of every subject
(``esdb.api.demo.…``) is renamed to a fresh one, and renamed back in the reply, so a document
reads as if on a fresh ``gater up``. What varies between runs is masked before comparing: ids
the service generates (UUIDs, subscription keys), times, positions, sizes, lags and the like
(``VOLATILE``).

A block the harness cannot run is skipped only when listed in ``SKIP`` with its reason.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from esdb_gater.shared.core.settings import ChannelsSettings, Settings
from esdb_gater.shared.runtime.runner import Running
from esdb_gater.shared.security import capability
from esdb_gater.shared.security import signing as security
from tests.security.conftest import own_server, own_services

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]

DOCS = [  # channel.md runs in test_channel_document_runs_in_order, on a server of its own
    "README.md",
    "docs/api/stream.md",
    "docs/api/subscription.md",
    "docs/api/snapshot.md",
    "docs/api/schema.md",
    "docs/api/link.md",
    "docs/api/scavenger.md",
    "docs/api/causation.md",
    "docs/api/health.md",
]

# (document, a piece of the command, which occurrence (1-based) or 0 for all) → why it is not run
SKIP: dict[tuple[str, str, int], str] = {
    ("docs/api/stream.md", "esdb.api.orders.stream.version", 0): (
        "shows `gater serve stream` without auto-create; the session's services create stores on first use"
    ),
    ("docs/api/health.md", "esdb.api._.health.check", 2): (
        "shows a deployment running only the stream and health services with a low memory threshold"
    ),
}

# ops whose reply may lag behind what was written: asked again until it matches
EVENTUAL = {"read", "forward", "info", "list", "get", "policy_get", "policy_list", "history", "effects", "correlated"}
RETRY_S = 10.0

# keys whose values differ from run to run
VOLATILE = {
    "event_id",
    "timestamp",
    "epoch_us",
    "position",
    "created_at",
    "updated_at",
    "registered_at",
    "published_at",
    "expires_at",
    "key",
    "lag_seconds",
    "lag_events",
    "checkpoint",
    "checkpoint_position",
    "trace_id",
    "rtt_ms",
    "last_run",
    "signed_at",
    "signature",
    "archive_key",
    "size",
    "used",
    "total",
    "ratio",
    "source",
    "checks",
    "digest",
    "at",
}
# replies that race with background work (the doc says "within a moment"): these keys are masked too
RACY: dict[str, set[str]] = {
    "link.start": {"active", "events_processed", "events_filtered", "lag", "last_event"},
    "subscription.save": {"active"},
}
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
HEX_KEY = re.compile(r"[0-9a-f]{32}")


def mask(value: Any, extra: frozenset[str] = frozenset()) -> Any:
    if isinstance(value, dict):
        return {k: ("<v>" if k in VOLATILE or k in extra else mask(v, extra)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask(v, extra) for v in value]
    if isinstance(value, str):
        if UUID.match(value):
            return "<uuid>"
        return HEX_KEY.sub("<key>", value)
    return value


@dataclass
class Step:
    line: int
    argv: list[str]
    expected: list[str] | None  # the reply block's lines, when the document shows one


@dataclass
class Doc:
    path: str
    steps: list[Step] = field(default_factory=list)


FENCE = re.compile(r"^```(\S*)\s*$")


def _blocks(lines: list[str]) -> list[tuple[str, int, int, list[str]]]:
    """(language, first line number, closing line number, lines) of every fenced block."""
    out = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m:
            j = i + 1
            while not lines[j].startswith("```"):
                j += 1
            out.append((m.group(1), i + 1, j + 1, lines[i + 1 : j]))
            i = j + 1
        else:
            i += 1
    return out


def parse(path: str) -> Doc:
    lines = (ROOT / path).read_text().splitlines()
    if path == "README.md":  # the walk-through only: the other sections need --secure or a cluster
        start = next(i for i, line in enumerate(lines) if line.startswith("## Walk-through"))
        end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("## "))
        lines = [""] * start + lines[start:end]
    blocks = _blocks(lines)
    doc = Doc(path)
    for k, (lang, first, last, body) in enumerate(blocks):
        if lang != "sh":
            continue
        cmds = [(first + 1 + n, text) for n, text in enumerate(body) if re.match(r"^nats (req|sub) ", text)]
        expected = None
        if k + 1 < len(blocks):
            nlang, nfirst, _, nbody = blocks[k + 1]
            between = lines[last : nfirst - 1]
            if nlang in ("", "json") and not any(t.strip() for t in between):
                expected = nbody
        for n, (lineno, text) in enumerate(cmds):
            argv = shlex.split(text, comments=True)
            if argv[-1] == "&":
                argv.pop()
            doc.steps.append(Step(lineno, argv, expected if n == len(cmds) - 1 else None))
    return doc


def parse_expected(lines: list[str]) -> tuple[str | None, Any]:
    """The status header and the body of a documented reply (events broken into lines joined)."""
    status = None
    body = []
    for line in lines:
        m = re.match(r"^Nats-Service-Error-Code: (\d+)$", line)
        if m:
            status = m.group(1)
        elif not line.startswith("Nats-Service-Error:"):
            body.append(line)
    return status, json.loads("".join(body))


class Stores:
    """A fresh store for each store token a document names; replies are mapped back."""

    def __init__(self) -> None:
        self.suffix = uuid.uuid4().hex[:8]
        self.names: dict[str, str] = {}

    def subject(self, subject: str) -> str:
        m = re.match(r"^esdb\.api\.([A-Za-z0-9_-]{1,50})\.(.*)$", subject)
        if not m or m.group(1) == "_":
            return subject
        new = self.names.setdefault(m.group(1), f"{m.group(1)}-{self.suffix}")
        return f"esdb.api.{new}.{m.group(2)}"

    def back(self, text: str) -> str:
        for old, new in self.names.items():
            text = text.replace(new, old)
        return text


class Learned:
    """Values a document takes from an earlier reply (an ``epoch_us`` for a temporal read, an
    ``archive_key``): the documented value is replaced by the one this run got."""

    KEYS = ("epoch_us", "archive_key", "id")

    def __init__(self) -> None:
        self.ints: dict[int, int] = {}
        self.strs: dict[str, str] = {}

    def learn(self, want: Any, got: Any) -> None:
        if isinstance(want, dict) and isinstance(got, dict):
            for k, v in want.items():
                if k in self.KEYS and k in got and type(v) is type(got[k]):
                    if isinstance(v, int):
                        self.ints[v] = got[k]
                    elif isinstance(v, str):
                        self.strs[v] = got[k]
                else:
                    self.learn(v, got.get(k))
        elif isinstance(want, list) and isinstance(got, list):
            for w, g in zip(want, got, strict=False):
                self.learn(w, g)

    def apply(self, body: str) -> str:
        for old, new in self.strs.items():
            body = body.replace(json.dumps(old), json.dumps(new))

        def num(m: re.Match[str]) -> str:
            v = int(m.group(0))
            for off in (0, -1, 1):  # "one microsecond before the first event"
                if v + off in self.ints:
                    return str(self.ints[v + off] - off)
            return m.group(0)

        return re.sub(r"\b\d{16}\b", num, body)


class Resign:
    """A documented signed channel message is signed again, now, with the run's secret (the
    doc's signature expired ``message_ttl_s`` after it was made); the same documented message
    gets the same new signature, so a documented replay is still a replay."""

    def __init__(self, secret: str | None) -> None:
        self.secret = secret
        self.done: dict[str, Any] = {}

    def apply(self, body: str) -> str:
        if self.secret is None or '"signature"' not in body:
            return body
        req = json.loads(body)
        msg = req.get("message")
        if not (isinstance(msg, dict) and "signature" in msg):
            return body
        key = msg["signature"]
        if key not in self.done:
            self.done[key] = security.sign({k: v for k, v in msg.items() if k != "signed_at"}, self.secret)
        return json.dumps({**req, "message": self.done[key]}, separators=(",", ":"))


async def run_doc(
    nc: Client, doc: Doc, variables: dict[str, str] | None = None, secret: str | None = None
) -> list[str]:
    """Run the document's steps in order; return one line per mismatch. ``variables`` replace
    ``$NAME`` in request bodies (tokens made for this run); ``secret`` re-signs signed messages."""
    resign = Resign(secret)
    stores = Stores()
    learned = Learned()
    seen: dict[str, int] = {}
    problems: list[str] = []
    subs: list[Subscription] = []

    async def swallow(msg: Msg) -> None:
        return None

    for step in doc.steps:
        where = f"{doc.path}:{step.line}"
        text = " ".join(step.argv)
        skip = False
        for p, piece, nth in SKIP:
            if p == doc.path and piece in text:
                seen[piece] = seen.get(piece, 0) + 1
                skip = skip or nth in (0, seen[piece])
        if skip:
            continue
        argv = step.argv[1:]
        headers: dict[str, str] = {}
        rest: list[str] = []
        while argv:
            opt = argv.pop(0)
            if opt == "-H":
                k, v = argv.pop(0).split(":", 1)
                headers[k] = v
            else:
                rest.append(opt)
        verb, subject, *body = rest
        if verb == "sub":
            subs.append(await nc.subscribe(subject, cb=swallow))
            continue
        payload = learned.apply(body[0]) if body else ""
        for name, value in (variables or {}).items():
            payload = payload.replace(f"${name}", value)
        payload = resign.apply(payload)
        want_status, want = None, None
        if step.expected is not None:
            try:
                want_status, want = parse_expected(step.expected)
            except json.JSONDecodeError:
                step.expected = None  # not a JSON reply block (a delivery, Graphviz text, …)
        # a read the document shows "a moment later" (a link's derived stream, a policy's last run,
        # a subscription's checkpoint) is asked again until it matches, for a bounded time;
        # a retryable `unavailable` is asked again like any client would
        deadline = asyncio.get_running_loop().time() + RETRY_S
        failed = False
        while True:
            try:
                reply = await nc.request(stores.subject(subject), payload.encode(), timeout=10, headers=headers or None)
            except Exception as e:  # reported, not raised: every mismatch of the doc at once
                problems.append(f"{where}: {text}\n    no reply: {type(e).__name__}: {e}")
                failed = True
                break
            got_status = (reply.headers or {}).get("Nats-Service-Error-Code")
            got_text = stores.back(reply.data.decode())
            again = got_status == "503" and want_status != "503"
            if want is not None and not again and subject.rsplit(".", 1)[-1] in EVENTUAL:
                again = want_status != got_status or mask(want) != mask(json.loads(got_text))
            if not again or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.2)
        if failed:
            continue
        if got_status == "500":
            problems.append(f"{where}: internal error {got_text}")
        if step.expected is None:
            continue
        got = json.loads(got_text)
        learned.learn(want, got)
        extra = frozenset(RACY.get(".".join(subject.split(".")[-2:]), ()))
        if want_status != got_status or mask(want, extra) != mask(got, extra):
            problems.append(
                f"{where}: {text}\n    documented: {want_status or ''} {json.dumps(want)}\n"
                f"    got:        {got_status or ''} {got_text}"
            )
    for sub in subs:
        await sub.unsubscribe()
    return problems


def test_every_document_is_parsed() -> None:
    """The harness finds the requests (a change of layout must not silently test nothing)."""
    for path in [*DOCS, CHANNEL_DOC]:
        doc = parse(path)
        assert doc.steps, path
        assert any(s.expected for s in doc.steps), path


@pytest.mark.parametrize("path", DOCS)
async def test_document_runs_in_order(services: Running, nats_url: str, path: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        problems = await run_doc(nc, parse(path))
    finally:
        await nc.drain()
    assert not problems, "\n" + "\n".join(problems)


CHANNEL_DOC = "docs/api/channel.md"


@pytest.mark.requires_own_server
async def test_channel_document_runs_in_order() -> None:
    """channel.md runs against `gater up` started as its introduction says: the secret
    ``demo-secret``, a trusted root, and ``audit`` in capability mode ``required``. The root is
    made here (the doc's root key is not published), and so are the doc's ``$TOKEN`` (publish on
    ``audit/*``) and ``$SUBSCRIBE_TOKEN`` (subscribe on ``audit/login.>``) for Alice."""
    root, alice = capability.Identity.generate(), capability.Identity.generate()

    def token(resource: str, action: str) -> str:
        return capability.encode(
            capability.sign(capability.create(root, alice, [capability.grant(resource, action)]), root)
        )

    variables = {
        "SUBSCRIBE_TOKEN": token("esdb://default/channel/audit/login.>", "channel/subscribe"),
        "TOKEN": token("esdb://default/channel/audit/*", "channel/publish"),
    }
    with own_server("doc-channel") as srv:
        settings = Settings(
            nats_url=srv.url,
            channels=ChannelsSettings.model_validate(
                {
                    "hmac_secret": "demo-secret",
                    "trusted_issuers": [root.did],
                    "overrides": {"audit": {"capability_mode": "required"}},
                }
            ),
        )
        async with own_services(settings, ["channel"]):
            nc = await nats.connect(srv.url)
            try:
                problems = await run_doc(nc, parse(CHANNEL_DOC), variables, secret="demo-secret")
            finally:
                await nc.drain()
    assert not problems, "\n" + "\n".join(problems)
