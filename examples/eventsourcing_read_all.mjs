// Read an eventsourcing application's events from Node.js (docs/eventsourcing.md): plain NATS
// request/reply to stream.read_all, paged with "next". The library stores each event's state as
// bytes (application/octet-stream, base64 in JSON replies): without a cipher or compressor it is
// the JSON the library's transcoder wrote.
//
//   npm install nats
//   node eventsourcing_read_all.mjs BankAccounts            # NATS_URL, ESDB_GATER_SUBJECT_PREFIX
import { connect, StringCodec } from "nats";

const store = process.argv[2] ?? "BankAccounts";
const prefix = process.env.ESDB_GATER_SUBJECT_PREFIX ?? "esdb";
const nc = await connect({ servers: process.env.NATS_URL ?? "nats://127.0.0.1:4222" });
const sc = StringCodec();

const events = [];
let body = { limit: 100 };
for (;;) {
  const msg = await nc.request(`${prefix}.api.${store}.stream.read_all`, sc.encode(JSON.stringify(body)), { timeout: 5000 });
  const reply = JSON.parse(sc.decode(msg.data));
  if (msg.headers?.get("Nats-Service-Error-Code")) throw new Error(JSON.stringify(reply.error));
  for (const e of reply.events) {
    const state = e.data_content_type === "application/json" ? e.data : JSON.parse(Buffer.from(e.data, "base64").toString("utf8"));
    events.push({ id: e.notification_id, aggregate: e.stream_id, version: e.metadata.originator_version, topic: e.event_type, state });
    console.log(`${e.notification_id} ${e.stream_id} v${e.metadata.originator_version} ${e.event_type} ${JSON.stringify(state)}`);
  }
  if (reply.next === null || reply.events.length === 0) break;
  body = { from: reply.next, inclusive: false, limit: 100 };
}
await nc.close();
console.log(JSON.stringify({ ok: true, count: events.length, topics: events.map((e) => e.topic) }));
