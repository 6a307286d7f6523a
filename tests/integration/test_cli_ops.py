"""The operator commands of ``gater`` (esdb_gater/cli/ops.py, docs/cli.md), each run as a process
(``python -m esdb_gater.cli …``) against the session's server and services, as an operator would."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from dataclasses import dataclass
from typing import Any

import pytest

from esdb_gater.shared.client import GaterClient
from esdb_gater.shared.runtime.runner import Running
from esdb_gater.shared.tooling.natsserver import free_port

pytestmark = pytest.mark.usefixtures("services")

_LIMIT = 30.0  # no command here should come near this; a hang fails instead of blocking the suite


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


async def gater(
    *argv: str, url: str | None = None, stdin: bytes | None = None, env: dict[str, str] | None = None
) -> Result:
    """Run ``gater ARGV`` in a process of its own (the services answer on this event loop, so the
    process is awaited, never waited for in a blocking call)."""
    environ = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "ESDB_GATER_NATS_URL", "GATER_TOKEN")}
    environ.update(env or {})
    if url is not None:
        environ["NATS_URL"] = url
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "esdb_gater.cli",
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environ,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), _LIMIT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


def _no_traceback(r: Result) -> None:
    assert "Traceback" not in r.err and "Traceback" not in r.out, r


async def _seed(client: GaterClient, store: str, stream_id: str, n: int = 3) -> None:
    await client.append_events(
        store, stream_id, -1, [{"event_type": f"Happened{i}", "data": {"n": i}} for i in range(n)]
    )


# --- req ------------------------------------------------------------------------------------------


async def test_req_prints_a_success_reply_as_is_and_exits_0(nats_url: str, client: GaterClient, store: str) -> None:
    await _seed(client, store, "order-1", 2)
    r = await gater("req", f"esdb.api.{store}.stream.version", '{"stream_id":"order-1"}', url=nats_url)
    assert (r.code, r.out) == (0, '{"version":1}\n'), r


async def test_req_reads_the_body_from_stdin_and_defaults_to_an_empty_object(nats_url: str, store: str) -> None:
    r = await gater("req", f"esdb.api.{store}.stream.version", "-", url=nats_url, stdin=b'{"stream_id":"nope"}')
    assert (r.code, r.out) == (0, '{"version":-1}\n'), r
    r = await gater("req", f"esdb.api.{store}.stream.list", url=nats_url)  # body {}
    assert r.code == 0 and json.loads(r.out) == {"streams": [], "next": None}, r


async def test_req_prints_an_error_reply_like_the_readme_and_fails_only_with_fail(
    nats_url: str, client: GaterClient, store: str
) -> None:
    await _seed(client, store, "order-1", 2)
    body = '{"stream_id":"order-1","expected_version":0,"events":[{"event_type":"OrderShipped","data":{}}]}'
    r = await gater("req", f"esdb.api.{store}.stream.append", body, url=nats_url)
    assert r.code == 0, r
    lines = r.out.split("\n")
    assert lines[0] == "Nats-Service-Error: expected version 0, stream 'order-1' is at 1", r.out
    assert lines[1] == "Nats-Service-Error-Code: 409"
    assert lines[2] == ""
    envelope = json.loads(lines[3])
    assert envelope["error"]["code"] == "wrong_expected_version"
    assert envelope["error"]["details"] == {"expected": 0, "actual": 1, "stream_id": "order-1"}
    assert lines[4:] == [""]  # nothing after the body's line
    failed = await gater("req", "--fail", f"esdb.api.{store}.stream.append", body, url=nats_url)
    assert failed.code == 1 and failed.out == r.out, failed


async def test_req_sends_headers(nats_url: str, store: str) -> None:
    # a msgpack Content-Type on a JSON body: the service cannot decode it, which proves the header went
    r = await gater(
        "req", "-H", "Content-Type: application/msgpack", f"esdb.api.{store}.stream.version", "{}", url=nats_url
    )
    assert r.code == 0 and "Nats-Service-Error-Code: 400" in r.out, r
    bad = await gater("req", "-H", "no-colon", f"esdb.api.{store}.stream.version", url=nats_url)
    assert bad.code == 2 and "KEY:VALUE" in bad.err, bad


async def test_req_without_responders_says_so_in_one_line_and_exits_2(nats_url: str) -> None:
    r = await gater("req", "nobody.listens.here", "{}", url=nats_url)
    assert (r.code, r.out, r.err) == (2, "", "gater: no responders on nobody.listens.here\n"), r


async def test_req_times_out_in_one_line(nats_url: str, nc: Any) -> None:
    sub = await nc.subscribe("cli.test.silent")  # a responder that never answers
    try:
        r = await gater("req", "--timeout", "0.5", "cli.test.silent", url=nats_url)
    finally:
        await sub.unsubscribe()
    assert (r.code, r.err) == (2, "gater: no reply on cli.test.silent within 0.5s\n"), r


async def test_an_unreachable_server_is_one_line_and_exit_2_for_every_command() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    for argv in (
        ("req", "esdb.api.demo.stream.version"),
        ("sub", "x"),
        ("streams", "demo"),
        ("read", "demo", "s"),
        ("subscriptions", "demo"),
        ("links", "demo"),
        ("scavenge", "demo", "s", "--keep-versions", "1"),
        ("health",),
    ):
        r = await gater(*argv, "--server", url, "--connect-timeout", "2")
        assert r.code == 2, (argv, r)
        assert r.err == f"gater: cannot connect to NATS at {url}: connection refused\n", (argv, r)
        _no_traceback(r)


# --- sub ------------------------------------------------------------------------------------------


async def _start_sub(*argv: str, url: str) -> asyncio.subprocess.Process:
    environ = {**os.environ, "NATS_URL": url}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "esdb_gater.cli",
        "sub",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environ,
    )
    assert proc.stderr is not None
    line = await asyncio.wait_for(proc.stderr.readline(), _LIMIT)  # the server has the subscription
    assert line.decode().startswith("subscribed to "), line
    return proc


async def test_sub_prints_each_message_and_stops_after_count(nats_url: str, nc: Any) -> None:
    proc = await _start_sub("cli.test.sub.*", "--count", "2", "--headers", url=nats_url)
    await nc.publish("cli.test.sub.a", b'{"n":1}', headers={"K": "v"})
    await nc.publish("cli.test.sub.b", b"plain text")
    out, _ = await asyncio.wait_for(proc.communicate(), _LIMIT)
    assert proc.returncode == 0
    assert (
        out.decode()
        == '[#1] Received on "cli.test.sub.a"\nK: v\n{"n":1}\n\n[#2] Received on "cli.test.sub.b"\nplain text\n\n'
    )


async def test_sub_json_lines_and_ack_answer_the_reply_subject(nats_url: str, nc: Any) -> None:
    proc = await _start_sub("cli.test.subj", "--count", "1", "--json", "--ack", url=nats_url)
    reply = await nc.request("cli.test.subj", b'{"a":[1]}', timeout=10)  # --ack answers it
    assert reply.data == b""
    out, _ = await asyncio.wait_for(proc.communicate(), _LIMIT)
    assert proc.returncode == 0
    line = json.loads(out)
    assert line["subject"] == "cli.test.subj" and line["data"] == {"a": [1]} and line["reply"]


async def test_ctrl_c_ends_sub_and_read_follow_with_exit_0(nats_url: str, client: GaterClient, store: str) -> None:
    await _seed(client, store, "s-1", 1)
    proc = await _start_sub("cli.test.ctrl-c", url=nats_url)
    proc.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(proc.communicate(), _LIMIT)
    assert proc.returncode == 0 and b"Traceback" not in err, err
    environ = {**os.environ, "NATS_URL": nats_url}
    follow = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "esdb_gater.cli", "read", store, "s-1", "--follow", "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=environ,
    )  # fmt: skip
    assert follow.stdout is not None
    first = await asyncio.wait_for(follow.stdout.readline(), _LIMIT)  # it is following now
    assert json.loads(first)["version"] == 0
    follow.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(follow.communicate(), _LIMIT)
    assert follow.returncode == 0 and b"Traceback" not in err, err


async def test_sub_timeout_before_count_exits_2(nats_url: str) -> None:
    r = await gater("sub", "cli.test.quiet", "--count", "1", "--timeout", "0.3", url=nats_url)
    assert r.code == 2 and "received 0 of 1 messages on cli.test.quiet within 0.3s" in r.err, r
    r = await gater("sub", "cli.test.quiet", "--timeout", "0.3", url=nats_url)
    assert r.code == 0 and r.out == "", r


# --- streams and read -----------------------------------------------------------------------------


async def test_streams_lists_every_page(nats_url: str, client: GaterClient, store: str) -> None:
    ids = ["a-1", "b-2", "orders.eu/42 ünï *>$"]
    for sid in ids:
        await _seed(client, store, sid, 1)
    r = await gater("streams", store, "--json", url=nats_url)
    assert r.code == 0 and r.json() == {"streams": sorted(ids, key=lambda s: s.encode())}, r
    r = await gater("streams", store, "--limit", "2", "--json", url=nats_url)
    assert r.json() == {"streams": ["a-1", "b-2"]}, r
    table = await gater("streams", store, url=nats_url)
    assert table.code == 0 and all(sid in table.out for sid in ids) and "3 streams" in table.out, table


async def test_an_error_reply_is_its_code_and_message_in_one_line(nats_url: str) -> None:
    r = await gater("read", "nostore" + os.urandom(4).hex(), "s-1", url=nats_url)
    assert r.code == 1 and r.err.startswith(("gater: store_not_found: ", "gater: stream_not_found: ")), r
    assert r.err.count("\n") == 1
    _no_traceback(r)


async def test_read_table_json_backward_and_paging(nats_url: str, client: GaterClient, store: str) -> None:
    await _seed(client, store, "s-1", 5)
    r = await gater("read", store, "s-1", "--json", url=nats_url)
    events = [json.loads(line) for line in r.out.splitlines()]
    assert r.code == 0 and [e["version"] for e in events] == [0, 1, 2, 3, 4], r
    r = await gater("read", store, "s-1", "--json", "--from", "3", url=nats_url)
    assert [json.loads(line)["version"] for line in r.out.splitlines()] == [3, 4]
    r = await gater("read", store, "s-1", "--json", "--backward", "--count", "2", url=nats_url)
    assert [json.loads(line)["version"] for line in r.out.splitlines()] == [4, 3]
    table = await gater("read", store, "s-1", "--count", "2", url=nats_url)
    assert table.code == 0 and "Happened0" in table.out and "Happened1" in table.out, table
    assert "Happened2" not in table.out and '{"n":1}' in table.out
    missing = await gater("read", store, "nope", url=nats_url)
    assert missing.code == 1 and missing.err == "gater: stream_not_found: stream 'nope' not found\n", missing


async def test_read_follow_prints_new_events_until_count(nats_url: str, client: GaterClient, store: str) -> None:
    await _seed(client, store, "s-1", 1)
    # the command's requests to the stream service, seen on the way: the events are appended
    # once it has read twice, so it is following by then
    requests = await client.nc.subscribe(f"esdb.api.{store}.stream.>")
    await client.nc.flush()
    task = asyncio.create_task(
        gater("read", store, "s-1", "--follow", "--json", "--count", "3", "--interval", "0.1", url=nats_url)
    )
    for _ in range(2):
        await requests.next_msg(timeout=30)
    await requests.unsubscribe()
    await client.append_events(store, "s-1", 0, [{"event_type": "Later", "data": {"n": 1}}])
    await client.append_events(store, "s-1", 1, [{"event_type": "Later", "data": {"n": 2}}])
    r = await task
    assert r.code == 0, r
    assert [json.loads(line)["version"] for line in r.out.splitlines()] == [0, 1, 2]


async def test_read_follow_and_backward_is_a_usage_error(nats_url: str, store: str) -> None:
    r = await gater("read", store, "s-1", "--follow", "--backward", url=nats_url)
    assert r.code == 2 and "--follow" in r.err, r


# --- subscriptions, links, scavenge, health --------------------------------------------------------


async def test_subscriptions_and_links_list_what_exists(nats_url: str, client: GaterClient, store: str) -> None:
    await _seed(client, store, "order-1", 2)
    await client.save_subscription(store, "event_type", "Happened0", "cli-sub", subscriber=f"cli.deliver.{store}")
    await client.create_link(store, {"name": "cli-link", "source": {"type": "stream_pattern", "pattern": "order-*"}})
    r = await gater("subscriptions", store, "--json", url=nats_url)
    [sub] = r.json()["subscriptions"]
    assert sub["name"] == "cli-sub" and sub["subscriber"] == f"cli.deliver.{store}", r
    table = await gater("subscriptions", store, url=nats_url)
    assert table.code == 0 and "cli-sub" in table.out and f"cli.deliver.{store}" in table.out, table
    r = await gater("links", store, "--json", url=nats_url)
    [link] = r.json()["links"]
    assert link["name"] == "cli-link" and link["status"] == "stopped", r
    table = await gater("links", store, url=nats_url)
    assert table.code == 0 and "cli-link" in table.out and "stopped" in table.out and "order-*" in table.out, table


async def test_links_wait_follows_a_backfill_until_it_has_caught_up(
    nats_url: str, client: GaterClient, store: str
) -> None:
    for i in range(4):  # 300 events in 4 streams, stored before the link exists: a backfill
        await client.append_events(
            store, f"order-{i}", -1, [{"event_type": "OrderPlaced", "data": {"n": n}} for n in range(75)]
        )
    await client.create_link(store, {"name": "wait-link", "source": {"type": "stream_pattern", "pattern": "order-*"}})
    stopped = await gater("links", store, "--wait", "wait-link", "--json", url=nats_url)  # created, not started
    assert stopped.code == 1 and stopped.err.strip().splitlines() == [
        "gater: link 'wait-link' is stopped: start it with link.start to let it catch up"
    ], stopped
    assert stopped.json()["status"] == "stopped", stopped
    await client.start_link(store, "wait-link")
    r = await gater("links", store, "--wait", "wait-link", "--interval", "0.1", "--json", url=nats_url)
    assert (r.code, r.err) == (0, ""), r  # --json: no progress lines, only the final link.info
    info = r.json()
    assert info["name"] == "wait-link" and info["status"] == "running" and info["lag"] == 0, info
    assert info["events_processed"] == 300, info
    plain = await gater("links", store, "--wait", "wait-link", url=nats_url)  # stderr is a pipe: plain lines
    assert plain.code == 0 and "wait-link" in plain.out and "running" in plain.out, plain
    assert "link wait-link: running, 300 copied, 0 filtered, lag 0" in plain.err.splitlines(), plain


async def test_links_wait_for_an_unknown_link_is_one_line_and_exit_1(nats_url: str, store: str) -> None:
    r = await gater("links", store, "--wait", "nope", "--json", url=nats_url)
    assert (r.code, r.out) == (1, ""), r
    assert r.err.strip().splitlines() == ["gater: not_found: no link named 'nope'"], r
    _no_traceback(r)


async def test_scavenge_dry_run_one_stream_and_a_pattern(nats_url: str, client: GaterClient, store: str) -> None:
    for sid in ("order-1", "order-2", "other"):
        for i in range(3):  # three appends: scavenging keeps the last one
            await client.append_events(store, sid, [{"event_type": "E", "data": {"i": i}}])
    r = await gater(
        "scavenge",
        store,
        "order-1",
        "--keep-versions",
        "0",
        "--no-require-snapshot",
        "--dry-run",
        "--json",
        url=nats_url,
    )
    assert r.code == 0, r
    assert r.json()["dry_run"] is True and r.json()["deleted_count"] == 2 and r.json()["deleted_versions"] == [0, 1]
    r = await gater("scavenge", store, "order-*", "--keep-versions", "0", "--dry-run", "--json", url=nats_url)
    assert r.code == 0, r
    assert r.json()["results"] == [] and [(s["stream_id"], s["code"]) for s in r.json()["skipped"]] == [
        ("order-1", "no_snapshot"),
        ("order-2", "no_snapshot"),
    ]
    table = await gater(
        "scavenge", store, "order-*", "--keep-versions", "0", "--no-require-snapshot", "--dry-run", url=nats_url
    )
    assert table.code == 0 and "would remove 4 events from 2 streams" in table.out, table
    assert "other" not in table.out
    # a dry run removed nothing
    assert [e.version for e in await client.stream_forward(store, "order-1", 0, 10)] == [0, 1, 2]
    # one stream refused: the error code and message, exit 1
    r = await gater("scavenge", store, "order-1", "--keep-versions", "0", "--dry-run", url=nats_url)
    assert r.code == 1 and r.err.startswith("gater: no_snapshot: "), r
    # no criterion: the service's invalid_request, not a traceback
    r = await gater("scavenge", store, "order-1", "--dry-run", url=nats_url)
    assert r.code == 1 and r.err.startswith("gater: invalid_request: "), r
    _no_traceback(r)


async def test_scavenge_a_pattern_removes_from_every_match(nats_url: str, client: GaterClient, store: str) -> None:
    for sid in ("order-1", "order-2"):
        for i in range(2):
            await client.append_events(store, sid, [{"event_type": "E", "data": {"i": i}}])
    r = await gater(
        "scavenge", store, "order-*", "--keep-versions", "0", "--no-require-snapshot", "--json", url=nats_url
    )
    assert r.code == 0, r
    assert [(x["stream_id"], x["deleted_count"]) for x in r.json()["results"]] == [("order-1", 1), ("order-2", 1)]
    assert [e.version for e in await client.stream_forward(store, "order-2", 0, 10)] == [1]


async def test_health_shows_every_check_and_exits_by_status(nats_url: str, services: Running) -> None:
    r = await gater("health", "--json", url=nats_url)
    report = r.json()
    assert r.code == {"healthy": 0, "degraded": 1, "unhealthy": 2}[report["status"]], r
    assert set(report["checks"]) >= {"nats", "jetstream", "services", "stores", "memory"}
    table = await gater("health", url=nats_url)
    assert table.code == r.code, table
    assert table.out.splitlines()[0].startswith(report["status"])
    for check in ("nats", "jetstream", "services", "stores", "memory", "esdb-stream"):
        assert check in table.out, table


async def test_req_with_an_inbox_prefix(nats_url: str, client: GaterClient, store: str) -> None:
    # the ops user of --secure may only receive replies under _INBOX.ops (README, secure mode)
    await _seed(client, store, "s-1", 1)
    r = await gater(
        "req", "--inbox-prefix", "_INBOX.ops", f"esdb.api.{store}.stream.version", '{"stream_id":"s-1"}', url=nats_url
    )
    assert (r.code, r.out) == (0, '{"version":0}\n'), r


async def test_a_token_travels_as_the_authorization_header(nats_url: str, nc: Any) -> None:
    seen: list[dict[str, str]] = []

    async def answer(msg: Any) -> None:
        seen.append(dict(msg.headers or {}))
        await msg.respond(b'{"ok":true}')

    sub = await nc.subscribe("cli.test.token", cb=answer)
    try:
        r = await gater("req", "--token", "abc.def.ghi", "cli.test.token", url=nats_url)
        env = await gater("req", "cli.test.token", url=nats_url, env={"GATER_TOKEN": "from-env"})
    finally:
        await sub.unsubscribe()
    assert r.code == 0 and env.code == 0, (r, env)
    assert [h.get("Authorization") for h in seen] == ["Bearer abc.def.ghi", "Bearer from-env"]
