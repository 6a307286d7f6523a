#!/usr/bin/env bash
# Stream links (docs/api/link.md) as `nats` CLI requests against a fresh `gater up`:
#
#   .venv/bin/gater up        # in another terminal
#   examples/link.sh
#
# Needs the nats CLI. Failing requests print the ADR-32 error headers and envelope; the script
# carries on. The replies in the comments (shortened) are from one fresh `gater up` that ran
# link.sh, scavenger.sh, causation.sh and health.sh in that order: positions differ otherwise.
set -u
export NATS_URL="${NATS_URL:-nats://127.0.0.1:4222}"

echo "== three orders"
nats req esdb.api.demo.stream.append '{"stream_id":"order-1","events":[{"event_id":"evt-order-1","event_type":"OrderPlaced","data":{"amount":40,"currency":"EUR"},"metadata":{"correlation_id":"checkout-1"}}]}'
# {"version":0,"position":1,"count":1}

echo "== …"
nats req esdb.api.demo.stream.append '{"stream_id":"order-2","events":[{"event_id":"evt-order-2","event_type":"OrderPlaced","data":{"amount":120,"currency":"EUR"},"metadata":{"correlation_id":"checkout-2"}}]}'
# {"version":0,"position":2,"count":1}

echo "== …"
nats req esdb.api.demo.stream.append '{"stream_id":"order-3","events":[{"event_id":"evt-order-3","event_type":"OrderPlaced","data":{"amount":300,"currency":"EUR"},"metadata":{"correlation_id":"checkout-3"}}]}'
# {"version":0,"position":3,"count":1}

echo "== a link of the orders above 100, reshaped (not started yet)"
nats req esdb.api.demo.link.create '{"name":"big-orders","source":{"type":"stream_pattern","pattern":"order-*"},"filter":{"type":"and","filters":[{"field":"event_type","op":"=","value":"OrderPlaced"},{"field":"data.amount","op":">","value":100}]},"transform":{"rename_fields":{"amount":"total"},"add_fields":{"flagged":true},"remove_fields":["currency"]}}'
# {"name":"big-orders","stream_id":"$link:big-orders","source":{"type":"stream_pattern","pattern":"order-*"},"filter":{"type":"and","filters":[{"field":"event_type","op":"=","value":"OrderPlaced"},{"fie…

echo "== start it: backfill, then live"
nats req esdb.api.demo.link.start '{"name":"big-orders"}'
# {"name":"big-orders","stream_id":"$link:big-orders","source":{"type":"stream_pattern","pattern":"order-*"},"filter":{"type":"and","filters":[{"field":"event_type","op":"=","value":"OrderPlaced"},{"fie…
sleep 1

echo "== the derived stream (a moment later)"
nats req esdb.api.demo.stream.read '{"stream_id":"$link:big-orders","start_version":0,"count":10}'
# {"events":[{"event_id":"4b8e7886-d409-5098-a676-1fbe98aaeb03","event_type":"OrderPlaced","stream_id":"$link:big-orders","version":0,"data":{"total":120,"flagged":true},"metadata":{"correlation_id":"ch…

echo "== its progress"
nats req esdb.api.demo.link.info '{"name":"big-orders"}'
# {"name":"big-orders","stream_id":"$link:big-orders","source":{"type":"stream_pattern","pattern":"order-*"},"filter":{"type":"and","filters":[{"field":"event_type","op":"=","value":"OrderPlaced"},{"fie…

echo "== stop it (resumes where it stopped on start)"
nats req esdb.api.demo.link.stop '{"name":"big-orders"}'
# {"name":"big-orders","stream_id":"$link:big-orders","source":{"type":"stream_pattern","pattern":"order-*"},"filter":{"type":"and","filters":[{"field":"event_type","op":"=","value":"OrderPlaced"},{"fie…

echo "== every link of the store"
nats req esdb.api.demo.link.list '{}'
# {"links":[{"name":"big-orders","stream_id":"$link:big-orders","source":{"type":"stream_pattern","pattern":"order-*"},"filter":{"type":"and","filters":[{"field":"event_type","op":"=","value":"OrderPlac…

echo "== a name in use"
nats req esdb.api.demo.link.create '{"name":"big-orders","source":{"type":"all"}}'
# Nats-Service-Error-Code: 409
# {"error":{"code":"already_exists","message":"link 'big-orders' exists already","retryable":false,"details":{"name":"big-orders"}}}

echo "== a bad filter names the part"
nats req esdb.api.demo.link.create '{"name":"bad","source":{"type":"all"},"filter":{"field":"data.amount","op":"~","value":1}}'
# Nats-Service-Error-Code: 400
# {"error":{"code":"invalid_request","message":"invalid request","retryable":false,"details":{"field":"filter.field.op","reason":"Input should be '=', '!=', '>', '>=', '<', '<=', 'in', 'contains' or 'ma…

echo "== an unknown link"
nats req esdb.api.demo.link.info '{"name":"nope"}'
# Nats-Service-Error-Code: 404
# {"error":{"code":"not_found","message":"no link named 'nope'","retryable":false,"details":{"name":"nope"}}}

echo "== a scratch link …"
nats req esdb.api.demo.link.create '{"name":"scratch","source":{"type":"all"}}'
# {"name":"scratch","stream_id":"$link:scratch","source":{"type":"all"},"filter":null,"transform":null,"backfill":true,"status":"stopped","error":null,"active":false,"events_processed":0,"events_filtere…

echo "== … deleted with its derived stream"
nats req esdb.api.demo.link.delete '{"name":"scratch","delete_stream":true}'
# {"ok":true}
