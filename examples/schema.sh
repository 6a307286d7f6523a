#!/usr/bin/env bash
# The schema requests of docs/api/schema.md, as requests against `gater up`.
#
#   .venv/bin/gater up            # in another terminal
#   examples/schema.sh          # NATS_URL=nats://host:port examples/schema.sh for another server
#
# Sends with the nats CLI when it is installed, else with `gater req` (examples/_req.sh). Failing
# requests print the ADR-32 error headers and envelope; the script carries on. Ids and names end
# in this run's suffix ($RUN), so the script runs again on the same server; the replies in the
# comments (shortened) are from one fresh `gater up`, with the suffix left out.
set -euo pipefail
. "$(dirname "$0")/_req.sh"
STORE="${STORE:-demo}"

echo "== start clean: remove the schemas an earlier run registered (ok when there are none)"
req "esdb.api.$STORE.schema.unregister" '{"event_type":"PaymentReceived"}'
# {"ok":true}

echo "== two events written before any schema (version 1)"
req "esdb.api.$STORE.stream.append" '{"stream_id":"payment-1-'"$RUN"'","events":[{"event_type":"PaymentReceived","data":{"amt":40,"payer":"Ada Lovelace","status":"P"}},{"event_type":"PaymentReceived","data":{"amt":12,"payer":"Grace Hopper","status":"R"}}]}'
# {"version":1,"position":1,"count":2}

echo "== register version 1 with a JSON Schema"
req "esdb.api.$STORE.schema.register" '{"event_type":"PaymentReceived","schema":{"version":1,"description":"the first shape","json_schema":{"type":"object","required":["amt","payer"],"properties":{"amt":{"type":"integer","minimum":0},"payer":{"type":"string"},"status":{"enum":["P","R"]}}}}}'
# {"event_type":"PaymentReceived","version":1,"json_schema":{"type":"object","required":["amt","payer"],"properties":{"amt":{"type":"integer","minimum":0},"payer":{"type":"string"},"status":{"enum":["P","R"]}}},"description":"the first shape","upcast_from":{},"registered_at":1796097846083,"current_version":1,"versions":[1]}

echo "== version 2: rename and split"
req "esdb.api.$STORE.schema.register" '{"event_type":"PaymentReceived","schema":{"version":2,"description":"amount renamed, payer split","upcast_from":{"1":[{"op":"rename","from":"amt","to":"amount"},{"op":"split","path":"payer","separator":" ","into":["payer.first","payer.last"]}]}}}'
# {"event_type":"PaymentReceived","version":2,"json_schema":null,"description":"amount renamed, payer split","upcast_from":{"1":[{"op":"rename","from":"amt","to":"amount"},{"op":"split","path":"payer","separator":" ","into":["payer.first","payer.last"]}]},"registered_at":1796097846089,"current_version":2,"versions":[1,2]}

echo "== version 3: convert, add, map"
req "esdb.api.$STORE.schema.register" '{"event_type":"PaymentReceived","schema":{"version":3,"json_schema":{"type":"object","required":["amount","currency"],"properties":{"amount":{"type":"string"},"currency":{"type":"string","minLength":3,"maxLength":3},"status":{"enum":["paid","refunded","unknown"]}}},"upcast_from":{"2":[{"op":"convert","path":"amount","to":"string"},{"op":"add","path":"currency","value":"EUR"},{"op":"map","path":"status","table":{"P":"paid","R":"refunded"},"default":"unknown"}]}}}'

echo "== read: upcast to version 3"
req "esdb.api.$STORE.stream.forward" '{"stream_id":"payment-1-'"$RUN"'"}'

echo "== read raw: as stored"
req "esdb.api.$STORE.stream.forward" '{"stream_id":"payment-1-'"$RUN"'","raw":true}'

echo "== append a bad v3 event: invalid_request naming the field"
req "esdb.api.$STORE.stream.append" '{"stream_id":"payment-1-'"$RUN"'","events":[{"event_type":"PaymentReceived","data":{"amount":"15","currency":"EURO"},"metadata":{"schema_version":3}}]}'
# Nats-Service-Error-Code: 400
# {"error":{"code":"invalid_request","message":"data does not match the schema of 'PaymentReceived' version 3: 'EURO' is too long","retryable":false,"details":{"field":"events.0.data.currency","reason":"'EURO' is too long","event_type":"PaymentReceived","schema_version":3,"errors":[{"field":"events.0.data.currency","reason":"'EURO' is too long"}]}}}

echo "== append a bad v1 event (no schema_version = 1)"
req "esdb.api.$STORE.stream.append" '{"stream_id":"payment-1-'"$RUN"'","events":[{"event_type":"PaymentReceived","data":{"amt":"15","payer":"Alan Turing"}}]}'
# Nats-Service-Error-Code: 400
# {"error":{"code":"invalid_request","message":"data does not match the schema of 'PaymentReceived' version 1: '15' is not of type 'integer'","retryable":false,"details":{"field":"events.0.data.amt","reason":"'15' is not of type 'integer'","event_type":"PaymentReceived","schema_version":1,"errors":[{"field":"events.0.data.amt","reason":"'15' is not of type 'integer'"}]}}}

echo "== append a good v3 event"
req "esdb.api.$STORE.stream.append" '{"stream_id":"payment-1-'"$RUN"'","events":[{"event_type":"PaymentReceived","data":{"amount":"15","currency":"NOK","status":"paid"},"metadata":{"schema_version":3}}]}'
# {"version":2,"position":2,"count":1}

echo "== get the current version"
req "esdb.api.$STORE.schema.get" '{"event_type":"PaymentReceived"}'

echo "== get version 2"
req "esdb.api.$STORE.schema.get" '{"event_type":"PaymentReceived","version":2}'
# {"event_type":"PaymentReceived","version":2,"json_schema":null,"description":"amount renamed, payer split","upcast_from":{"1":[{"op":"rename","from":"amt","to":"amount"},{"op":"split","path":"payer","separator":" ","into":["payer.first","payer.last"]}]},"registered_at":1796097846089,"current_version":3,"versions":[1,2,3]}

echo "== a version that is not registered"
req "esdb.api.$STORE.schema.get" '{"event_type":"PaymentReceived","version":7}'
# Nats-Service-Error-Code: 404
# {"error":{"code":"not_found","message":"event type 'PaymentReceived' has no schema version 7","retryable":false,"details":{"event_type":"PaymentReceived","version":7,"versions":[1,2,3]}}}

echo "== a type without schemas"
req "esdb.api.$STORE.schema.get" '{"event_type":"OrderPlaced"}'
# Nats-Service-Error-Code: 404
# {"error":{"code":"not_found","message":"no schema for event type 'OrderPlaced'","retryable":false,"details":{"event_type":"OrderPlaced"}}}

echo "== list"
req "esdb.api.$STORE.schema.list" '{}'
# {"schemas":[{"event_type":"PaymentReceived","version":3,"versions":[1,2,3],"registered_at":1796097846096,"description":null}]}

echo "== upcast events explicitly"
req "esdb.api.$STORE.schema.upcast" '{"events":[{"event_type":"PaymentReceived","data":{"amt":99,"payer":"Edsger Dijkstra","status":"P"}},{"event_type":"PaymentReceived","data":{"amount":5,"payer":{"first":"Barbara","last":"Liskov"}},"metadata":{"schema_version":2}},{"event_type":"Unregistered","data":{"x":1}}]}'
# {"events":[{"event_type":"PaymentReceived","data":{"status":"paid","amount":"99","payer":{"first":"Edsger","last":"Dijkstra"},"currency":"EUR"},"metadata":{"schema_version":3}},{"event_type":"PaymentReceived","data":{"amount":"5","payer":{"first":"Barbara","last":"Liskov"},"currency":"EUR"},"metadata":{"schema_version":3}},{"event_type":"Unregistered","data":{"x":1},"metadata":{}}]}

echo "== a chain with a gap"
req "esdb.api.$STORE.schema.register" '{"event_type":"OrderPlaced","schema":{"version":3,"upcast_from":{"2":[{"op":"remove","path":"legacy_id"}]}}}'
# Nats-Service-Error-Code: 400
# {"error":{"code":"invalid_request","message":"the upcaster chain has a gap: nothing upcasts version 1 to 2","retryable":false,"details":{"field":"schema.upcast_from","reason":"no registered version of the type defines upcast_from[\"1\"] (steps from version 1 to 2); add it, as an empty list when nothing changes","from_version":1}}}

echo "== a malformed step"
req "esdb.api.$STORE.schema.register" '{"event_type":"OrderPlaced","schema":{"version":2,"upcast_from":{"1":[{"op":"rename","from":"sku"}]}}}'
# Nats-Service-Error-Code: 400
# {"error":{"code":"invalid_request","message":"invalid request","retryable":false,"details":{"field":"schema.upcast_from.1.0.rename.to","reason":"Field required","errors":[{"field":"schema.upcast_from.1.0.rename.to","reason":"Field required"}]}}}

echo "== a JSON Schema that is not one"
req "esdb.api.$STORE.schema.register" '{"event_type":"OrderPlaced","schema":{"version":1,"json_schema":{"type":"objekt"}}}'
# Nats-Service-Error-Code: 400
# {"error":{"code":"invalid_request","message":"schema.json_schema is not a valid JSON Schema","retryable":false,"details":{"field":"schema.json_schema.type","reason":"'objekt' is not valid under any of the given schemas"}}}

echo "== unregister a version the chain needs"
req "esdb.api.$STORE.schema.unregister" '{"event_type":"PaymentReceived","version":2}'
# Nats-Service-Error-Code: 400
# {"error":{"code":"invalid_request","message":"removing version 2 would leave a gap in the upcaster chain","retryable":false,"details":{"field":"version","reason":"no registered version of the type defines upcast_from[\"1\"] (steps from version 1 to 2); add it, as an empty list when nothing changes","from_version":1,"version":2}}}

echo "== register a type"
req "esdb.api.$STORE.schema.register" '{"event_type":"CartCleared","schema":{"version":1}}'
# {"event_type":"CartCleared","version":1,"json_schema":null,"description":null,"upcast_from":{},"registered_at":1796097846128,"current_version":1,"versions":[1]}

echo "== unregister it"
req "esdb.api.$STORE.schema.unregister" '{"event_type":"CartCleared"}'
# {"ok":true}

echo "== again: fine"
req "esdb.api.$STORE.schema.unregister" '{"event_type":"CartCleared"}'
# {"ok":true}
