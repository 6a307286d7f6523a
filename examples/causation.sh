#!/usr/bin/env bash
# Causation queries (docs/api/causation.md) as requests against `gater up`:
#
#   .venv/bin/gater up        # in another terminal
#   examples/causation.sh
#
# Sends with the nats CLI when it is installed, else with `gater req` (examples/_req.sh). Failing
# requests print the ADR-32 error headers and envelope; the script carries on. Ids and names end
# in this run's suffix ($RUN), so the script runs again on the same server; the replies in the
# comments (shortened) are from one fresh `gater up`, with the suffix left out.
set -euo pipefail
. "$(dirname "$0")/_req.sh"

echo "== an order (correlation checkout-2)"
req esdb.api.demo.stream.append '{"stream_id":"order-2-'"$RUN"'","events":[{"event_id":"evt-order-2-'"$RUN"'","event_type":"OrderPlaced","data":{"amount":120,"currency":"EUR"},"metadata":{"correlation_id":"checkout-2-'"$RUN"'"}}]}'
# {"version":0,"position":2,"count":1}

echo "== what it caused, across streams"
req esdb.api.demo.stream.append '{"stream_id":"pay-1-'"$RUN"'","events":[{"event_id":"evt-pay-1-'"$RUN"'","event_type":"PaymentRequested","data":{},"metadata":{"causation_id":"evt-order-2-'"$RUN"'","correlation_id":"checkout-2-'"$RUN"'"}}]}'
# {"version":0,"position":16,"count":1}

echo "== …"
req esdb.api.demo.stream.append '{"stream_id":"stock-1-'"$RUN"'","events":[{"event_id":"evt-stock-1-'"$RUN"'","event_type":"StockReserved","data":{},"metadata":{"causation_id":"evt-order-2-'"$RUN"'","correlation_id":"checkout-2-'"$RUN"'"}}]}'
# {"version":0,"position":17,"count":1}

echo "== …"
req esdb.api.demo.stream.append '{"stream_id":"pay-1-'"$RUN"'","events":[{"event_id":"evt-pay-2-'"$RUN"'","event_type":"PaymentCaptured","data":{},"metadata":{"causation_id":"evt-pay-1-'"$RUN"'","correlation_id":"checkout-2-'"$RUN"'"}}]}'
# {"version":1,"position":18,"count":1}

echo "== …"
req esdb.api.demo.stream.append '{"stream_id":"ship-1-'"$RUN"'","events":[{"event_id":"evt-ship-1-'"$RUN"'","event_type":"Shipped","data":{},"metadata":{"causation_id":"evt-pay-2-'"$RUN"'","correlation_id":"checkout-2-'"$RUN"'"}}]}'
# {"version":0,"position":19,"count":1}

echo "== effects of the order"
req esdb.api.demo.causation.effects '{"event_id":"evt-order-2-'"$RUN"'"}'
# {"events":[{"event_id":"evt-pay-1","event_type":"PaymentRequested","stream_id":"pay-1","version":0,"data":{},"metadata":{"causation_id":"evt-order-2","correlation_id":"checkout-2"},"tags":null,"timest…

echo "== the cause of the capture"
req esdb.api.demo.causation.cause '{"event_id":"evt-pay-2-'"$RUN"'"}'
# {"event":{"event_id":"evt-pay-1","event_type":"PaymentRequested","stream_id":"pay-1","version":0,"data":{},"metadata":{"causation_id":"evt-order-2","correlation_id":"checkout-2"},"tags":null,"timestam…

echo "== the order has no cause"
req esdb.api.demo.causation.cause '{"event_id":"evt-order-2-'"$RUN"'"}'
# Nats-Service-Error-Code: 404
# {"error":{"code":"no_cause","message":"event 'evt-order-2' has no causation_id","retryable":false,"details":{"event_id":"evt-order-2"}}}

echo "== an unknown id"
req esdb.api.demo.causation.cause '{"event_id":"no-such-event"}'
# Nats-Service-Error-Code: 404
# {"error":{"code":"not_found","message":"no event with id 'no-such-event'","retryable":false,"details":{"event_id":"no-such-event"}}}

echo "== the chain, root first"
req esdb.api.demo.causation.chain '{"event_id":"evt-ship-1-'"$RUN"'"}'
# {"events":[{"event_id":"evt-order-2","event_type":"OrderPlaced","stream_id":"order-2","version":0,"data":{"amount":120,"currency":"EUR"},"metadata":{"correlation_id":"checkout-2"},"tags":null,"timesta…

echo "== everything of checkout-2, by time"
req esdb.api.demo.causation.correlated '{"correlation_id":"checkout-2-'"$RUN"'"}'
# {"events":[{"event_id":"evt-order-2","event_type":"OrderPlaced","stream_id":"order-2","version":0,"data":{"amount":120,"currency":"EUR"},"metadata":{"correlation_id":"checkout-2"},"tags":null,"timesta…

echo "== the graph of the shipment's root, with Graphviz text"
req esdb.api.demo.causation.graph '{"event_id":"evt-ship-1-'"$RUN"'","format":"dot"}'
# {"nodes":[{"event_id":"evt-order-2","event_type":"OrderPlaced","stream_id":"order-2","version":0,"data":{"amount":120,"currency":"EUR"},"metadata":{"correlation_id":"checkout-2"},"tags":null,"timestam…

echo "== the graph of the correlation"
req esdb.api.demo.causation.graph '{"correlation_id":"checkout-2-'"$RUN"'"}'
# {"nodes":[{"event_id":"evt-order-2","event_type":"OrderPlaced","stream_id":"order-2","version":0,"data":{"amount":120,"currency":"EUR"},"metadata":{"correlation_id":"checkout-2"},"tags":null,"timestam…
