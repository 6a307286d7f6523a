#!/usr/bin/env bash
# Stream links (docs/api/link.md) as requests against `gater up`:
#
#   .venv/bin/gater up        # in another terminal
#   examples/link.sh
#
# Sends with the nats CLI when it is installed, else with `gater req` (examples/_req.sh). Failing
# requests print the ADR-32 error headers and envelope; the script carries on. Ids and names end
# in this run's suffix ($RUN), so the script runs again on the same server; the replies in the
# comments (shortened) are from one fresh `gater up`, with the suffix left out.
set -euo pipefail
. "$(dirname "$0")/_req.sh"

echo "== three orders"
req esdb.api.demo.stream.append '{"stream_id":"order-1-'"$RUN"'","events":[{"event_id":"evt-order-1-'"$RUN"'","event_type":"OrderPlaced","data":{"amount":40,"currency":"EUR"},"metadata":{"correlation_id":"checkout-1"}}]}'
# {"version":0,"position":1,"count":1}

echo "== …"
req esdb.api.demo.stream.append '{"stream_id":"order-2-'"$RUN"'","events":[{"event_id":"evt-order-2-'"$RUN"'","event_type":"OrderPlaced","data":{"amount":120,"currency":"EUR"},"metadata":{"correlation_id":"checkout-2"}}]}'
# {"version":0,"position":2,"count":1}

echo "== …"
req esdb.api.demo.stream.append '{"stream_id":"order-3-'"$RUN"'","events":[{"event_id":"evt-order-3-'"$RUN"'","event_type":"OrderPlaced","data":{"amount":300,"currency":"EUR"},"metadata":{"correlation_id":"checkout-3"}}]}'
# {"version":0,"position":3,"count":1}

echo "== a link of the orders above 100, reshaped (not started yet)"
req esdb.api.demo.link.create '{"name":"big-orders-'"$RUN"'","source":{"type":"stream_pattern","pattern":"order-*-'"$RUN"'"},"filter":{"type":"and","filters":[{"field":"event_type","op":"=","value":"OrderPlaced"},{"field":"data.amount","op":">","value":100}]},"transform":{"rename_fields":{"amount":"total"},"add_fields":{"flagged":true},"remove_fields":["currency"]}}'
# {"name":"big-orders","stream_id":"$link:big-orders","source":{"type":"stream_pattern","pattern":"order-*"},"filter":{"type":"and","filters":[{"field":"event_type","op":"=","value":"OrderPlaced"},{"fie…

echo "== start it: backfill, then live"
req esdb.api.demo.link.start '{"name":"big-orders-'"$RUN"'"}'
# {"name":"big-orders","stream_id":"$link:big-orders","source":{"type":"stream_pattern","pattern":"order-*"},"filter":{"type":"and","filters":[{"field":"event_type","op":"=","value":"OrderPlaced"},{"fie…
sleep 1

echo "== the derived stream (a moment later)"
req esdb.api.demo.stream.read '{"stream_id":"$link:big-orders-'"$RUN"'","start_version":0,"count":10}'
# {"events":[{"event_id":"4b8e7886-d409-5098-a676-1fbe98aaeb03","event_type":"OrderPlaced","stream_id":"$link:big-orders","version":0,"data":{"total":120,"flagged":true},"metadata":{"correlation_id":"ch…

echo "== its progress"
req esdb.api.demo.link.info '{"name":"big-orders-'"$RUN"'"}'
# {"name":"big-orders","stream_id":"$link:big-orders","source":{"type":"stream_pattern","pattern":"order-*"},"filter":{"type":"and","filters":[{"field":"event_type","op":"=","value":"OrderPlaced"},{"fie…

echo "== stop it (resumes where it stopped on start)"
req esdb.api.demo.link.stop '{"name":"big-orders-'"$RUN"'"}'
# {"name":"big-orders","stream_id":"$link:big-orders","source":{"type":"stream_pattern","pattern":"order-*"},"filter":{"type":"and","filters":[{"field":"event_type","op":"=","value":"OrderPlaced"},{"fie…

echo "== every link of the store"
req esdb.api.demo.link.list '{}'
# {"links":[{"name":"big-orders","stream_id":"$link:big-orders","source":{"type":"stream_pattern","pattern":"order-*"},"filter":{"type":"and","filters":[{"field":"event_type","op":"=","value":"OrderPlac…

echo "== a name in use"
req esdb.api.demo.link.create '{"name":"big-orders-'"$RUN"'","source":{"type":"all"}}'
# Nats-Service-Error-Code: 409
# {"error":{"code":"already_exists","message":"link 'big-orders' exists already","retryable":false,"details":{"name":"big-orders"}}}

echo "== a bad filter names the part"
req esdb.api.demo.link.create '{"name":"bad","source":{"type":"all"},"filter":{"field":"data.amount","op":"~","value":1}}'
# Nats-Service-Error-Code: 400
# {"error":{"code":"invalid_request","message":"invalid request","retryable":false,"details":{"field":"filter.field.op","reason":"Input should be '=', '!=', '>', '>=', '<', '<=', 'in', 'contains' or 'ma…

echo "== an unknown link"
req esdb.api.demo.link.info '{"name":"nope"}'
# Nats-Service-Error-Code: 404
# {"error":{"code":"not_found","message":"no link named 'nope'","retryable":false,"details":{"name":"nope"}}}

echo "== a scratch link …"
req esdb.api.demo.link.create '{"name":"scratch-'"$RUN"'","source":{"type":"all"}}'
# {"name":"scratch","stream_id":"$link:scratch","source":{"type":"all"},"filter":null,"transform":null,"backfill":true,"status":"stopped","error":null,"active":false,"events_processed":0,"events_filtere…

echo "== … deleted with its derived stream"
req esdb.api.demo.link.delete '{"name":"scratch-'"$RUN"'","delete_stream":true}'
# {"ok":true}
