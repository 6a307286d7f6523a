// A Node.js service following the event store with a persistent subscription, using only
// docs/api/subscription.md: save over request/reply, receive one message per event on its own
// subject, acknowledge natively by replying to each delivery.
import { connect, StringCodec } from "nats";
import assert from "node:assert/strict";

const url = process.env.NATS_URL ?? "nats://127.0.0.1:4222";
const store = process.argv[2] ?? "crosslang";
const sc = StringCodec();
const nc = await connect({ servers: url });

async function req(service, op, body) {
  const msg = await nc.request(`esdb.api.${store}.${service}.${op}`, sc.encode(JSON.stringify(body)), { timeout: 10000 });
  const reply = JSON.parse(sc.decode(msg.data));
  if (msg.headers?.get("Nats-Service-Error-Code")) throw new Error(JSON.stringify(reply));
  return reply;
}

const sid = `node-sub-${Date.now()}`;
for (let i = 0; i < 3; i++) {
  await req("stream", "append", { stream_id: sid, events: [{ event_type: "Step", data: { i } }] });
}

const subject = `node.deliveries.${Date.now()}`;
const sub = nc.subscribe(subject);
const saved = await req("subscription", "save", {
  type: "stream", selector: sid, name: "node-follower", start_from: "start", subscriber: subject,
});
assert.equal(saved.name, "node-follower");

const seen = [];
const done = (async () => {
  for await (const m of sub) {
    const event = JSON.parse(sc.decode(m.data));
    assert.equal(m.headers.get("Esdb-Subscription"), "node-follower");
    assert.equal(Number(m.headers.get("Esdb-Version")), event.version);
    assert.equal(m.headers.get("Esdb-Delivery-Attempt"), "1");
    seen.push(event.version);
    m.respond(sc.encode("+ACK")); // native ack
    if (seen.length === 4) break;
  }
})();
await new Promise((r) => setTimeout(r, 200));
await req("stream", "append", { stream_id: sid, events: [{ event_type: "Step", data: { i: 3 } }] }); // live
let timer;
const timeout = new Promise((_, rej) => { timer = setTimeout(() => rej(new Error("deliveries timed out")), 15000); });
await Promise.race([done, timeout]);
clearTimeout(timer);
assert.deepEqual(seen, [0, 1, 2, 3]);

// the checkpoint follows the acks
let info;
for (let i = 0; i < 50; i++) {
  info = await req("subscription", "get", { name: "node-follower" });
  if (info.checkpoint === 3) break;
  await new Promise((r) => setTimeout(r, 100));
}
assert.equal(info.checkpoint, 3);
assert.equal(info.lag_events, 0);
await req("subscription", "remove", { type: "stream", selector: sid, name: "node-follower" });
console.log(JSON.stringify({ ok: true, seen }));
await nc.drain();
