// A Node.js service talking to the gateway with nothing but docs/api/stream.md:
// plain NATS request/reply with JSON bodies. Exits non-zero on the first surprise.
import { connect, StringCodec } from "nats";
import assert from "node:assert/strict";

const url = process.env.NATS_URL ?? "nats://127.0.0.1:4222";
const store = process.argv[2] ?? "crosslang";
const sc = StringCodec();
const nc = await connect({ servers: url });

async function req(op, body, service = "stream") {
  const msg = await nc.request(`esdb.api.${store}.${service}.${op}`, sc.encode(JSON.stringify(body)), { timeout: 5000 });
  const reply = JSON.parse(sc.decode(msg.data));
  const code = msg.headers?.get("Nats-Service-Error-Code");
  return { reply, code: code || null, error: msg.headers?.get("Nats-Service-Error") || null };
}

const sid = `node-${Date.now()}`;
const ev = (t, data) => ({ event_type: t, data });

// each expected-version mode
let r = await req("append", { stream_id: sid, expected_version: -1, events: [ev("Opened", { by: "node" })] });
assert.equal(r.code, null, JSON.stringify(r));
assert.deepEqual(r.reply.version, 0);
r = await req("append", { stream_id: sid, expected_version: 0, events: [ev("Deposited", { amount: 10 }), ev("Deposited", { amount: 5 })] });
assert.equal(r.reply.version, 2);
assert.equal(r.reply.count, 2);
r = await req("append", { stream_id: sid, expected_version: -4, events: [ev("Noted", "exists")] });
assert.equal(r.reply.version, 3);
r = await req("append", { stream_id: sid, events: [ev("Noted", "any")] }); // -2 is the default
assert.equal(r.reply.version, 4);

// a conflict: stale expected version
r = await req("append", { stream_id: sid, expected_version: 1, events: [ev("Late", null)] });
assert.equal(r.code, "409");
assert.ok(r.error);
assert.equal(r.reply.error.code, "wrong_expected_version");
assert.equal(r.reply.error.details.expected, 1);
assert.equal(r.reply.error.details.actual, 4);
assert.equal(r.reply.error.retryable, false);

// reads
r = await req("forward", { stream_id: sid, start_version: 0, count: 10 });
assert.deepEqual(r.reply.events.map((e) => e.version), [0, 1, 2, 3, 4]);
assert.deepEqual(r.reply.events[1].data, { amount: 10 });
assert.equal(r.reply.events[1].epoch_us, r.reply.events[2].epoch_us); // one append, one time
r = await req("backward", { stream_id: sid, start_version: -1, count: 2 });
assert.deepEqual(r.reply.events.map((e) => e.version), [4, 3]);
r = await req("read", { stream_id: sid, start_version: 3, count: 3, direction: "backward" });
assert.deepEqual(r.reply.events.map((e) => e.version), [3, 2, 1]);
r = await req("version", { stream_id: sid });
assert.equal(r.reply.version, 4);
r = await req("exists", { stream_id: "never-written" });
assert.equal(r.reply.exists, false);
r = await req("read", { stream_id: "never-written" });
assert.equal(r.reply.error.code, "stream_not_found");
assert.equal(r.code, "404");

// service discovery (ADR-32)
const info = await nc.request("$SRV.INFO.esdb-stream", sc.encode(""), { timeout: 2000 });
const svc = JSON.parse(sc.decode(info.data));
assert.equal(svc.name, "esdb-stream");
assert.ok(svc.endpoints.some((e) => e.subject === "esdb.api.*.stream.append"));

console.log(JSON.stringify({ ok: true, stream_id: sid, checks: 20 }));
await nc.drain();
