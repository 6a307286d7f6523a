// Sign channel messages in Node.js with only docs/security.md in hand (node:crypto, no Python)
// and publish them through the channel service. Checks the published HMAC test vectors first.
//   NATS_URL=nats://127.0.0.1:4222 ESDB_PREFIX=esdb ESDB_SECRET=... node channel_sign.mjs
// Prints one JSON line; exits non-zero on the first surprise.
import { createHmac } from "node:crypto";
import { readFileSync } from "node:fs";
import assert from "node:assert/strict";
import { connect, StringCodec } from "nats";

// docs/security.md: JSON with keys sorted by UTF-16 code units at every level, no whitespace,
// strings and numbers exactly as JSON.stringify writes them (RFC 8785), UTF-8.
function canonical(v) {
  if (v === null || typeof v !== "object") return JSON.stringify(v);
  if (Array.isArray(v)) return "[" + v.map(canonical).join(",") + "]";
  return "{" + Object.keys(v).sort().map((k) => JSON.stringify(k) + ":" + canonical(v[k])).join(",") + "}";
}

function signatureOf(message, secret) {
  const { signature, ...rest } = message;
  return createHmac("sha256", Buffer.from(secret, "utf8")).update(Buffer.from(canonical(rest), "utf8")).digest("base64");
}

function sign(message, secret) {
  const out = { ...message, signed_at: Math.floor(Date.now() / 1000) };
  delete out.signature;
  out.signature = signatureOf(out, secret);
  return out;
}

// 1. the published test vectors
const vectorsFile = new URL("../../docs/hmac-vectors.json", import.meta.url);
const { vectors } = JSON.parse(readFileSync(vectorsFile, "utf8"));
for (const t of vectors) {
  const { signature, ...rest } = t.message;
  assert.equal(canonical(rest), t.canonical, t.name);
  assert.equal(signatureOf(t.message, t.secret), t.signature, t.name);
}

// 2. the service accepts what we sign
const url = process.env.NATS_URL ?? "nats://127.0.0.1:4222";
const prefix = process.env.ESDB_PREFIX ?? "esdb";
const secret = process.env.ESDB_SECRET;
assert.ok(secret, "ESDB_SECRET must be set");
const sc = StringCodec();
const nc = await connect({ servers: url });

async function publish(channel, topic, message) {
  const body = JSON.stringify({ channel, topic, message });
  const msg = await nc.request(`${prefix}.api._.channel.publish`, sc.encode(body), { timeout: 5000 });
  const reply = JSON.parse(sc.decode(msg.data));
  return { reply, status: msg.headers?.get("Nats-Service-Error-Code") || null };
}

const topic = `node.${process.pid}`;
const sub = nc.subscribe(`${prefix}.ch.alerts.${topic}`, { max: 1, timeout: 5000 });
await nc.flush();
const signed = sign({ level: "critical", text: "disk full on Zoë's host", values: [1, 0.5, 1e21] }, secret);
let r = await publish("alerts", topic, signed);
assert.equal(r.status, null, JSON.stringify(r));
assert.equal(r.reply.ok, true);
assert.ok(Number.isInteger(r.reply.seq), JSON.stringify(r));
let delivered = null;
for await (const m of sub) delivered = JSON.parse(sc.decode(m.data));
assert.deepEqual(delivered, { channel: "alerts", topic, message: signed });

// the same message again is a replay
r = await publish("alerts", topic, signed);
assert.equal(r.status, "401");
assert.equal(r.reply.error.code, "invalid_signature");
assert.equal(r.reply.error.details.reason, "replayed");

// a field changed after signing
r = await publish("alerts", topic, { ...sign({ level: "low" }, secret), level: "critical" });
assert.equal(r.reply.error.code, "invalid_signature");
assert.equal(r.reply.error.details.reason, "mismatch");

// unsigned on a channel that requires HMAC; and too old
r = await publish("alerts", topic, { level: "low" });
assert.equal(r.reply.error.code, "signature_required");
const old = { level: "low", signed_at: Math.floor(Date.now() / 1000) - 3600 };
old.signature = signatureOf(old, secret);
r = await publish("alerts", topic, old);
assert.equal(r.reply.error.code, "message_expired");

await nc.drain();
console.log(JSON.stringify({ ok: true, vectors: vectors.length, delivered: delivered !== null }));
