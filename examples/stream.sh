#!/usr/bin/env bash
# The README walk-through, against `gater up`:
#
#   .venv/bin/gater up            # in another terminal
#   examples/stream.sh            # NATS_URL=nats://host:port examples/stream.sh for another server
#
# Sends with the nats CLI when it is installed, else with `gater req` (examples/_req.sh). Requests
# that fail print the ADR-32 error headers and the error envelope; the script carries on. Stream
# ids end in this run's suffix ($RUN), so the script can run again on the same server; the
# replies in the comments are from a fresh `gater up` (with the suffix left out).
set -euo pipefail
. "$(dirname "$0")/_req.sh"
STORE="${STORE:-demo}"
S="esdb.api.$STORE.stream"
O="order-1-$RUN"

echo "== append two events to a new stream (expected_version -1 = NO_STREAM)"
req "$S.append" '{"stream_id":"'"$O"'","expected_version":-1,"events":[{"event_type":"OrderPlaced","data":{"sku":"A-1","qty":2}},{"event_type":"ItemAdded","data":{"sku":"B-7","qty":1},"metadata":{"correlation_id":"c-1"}}]}'
# {"version":1,"position":1,"count":2}

echo "== append with a stale expected version: wrong_expected_version with expected/actual"
req "$S.append" '{"stream_id":"'"$O"'","expected_version":0,"events":[{"event_type":"OrderShipped","data":{"carrier":"DHL"}}]}'
# Nats-Service-Error-Code: 409
# {"error":{"code":"wrong_expected_version","message":"expected version 0, stream 'order-1' is at 1","retryable":false,"details":{"expected":0,"actual":1,"stream_id":"order-1"}}}

echo "== append with the right version"
req "$S.append" '{"stream_id":"'"$O"'","expected_version":1,"events":[{"event_type":"OrderShipped","data":{"carrier":"DHL"}}]}'
# {"version":2,"position":2,"count":1}

echo "== read forward from version 0"
req "$S.forward" '{"stream_id":"'"$O"'","start_version":0,"count":10}'

echo "== read backward from the last event"
req "$S.backward" '{"stream_id":"'"$O"'","start_version":-1,"count":2}'

echo "== the same with stream.read and an explicit direction"
req "$S.read" '{"stream_id":"'"$O"'","start_version":2,"count":2,"direction":"backward"}'

echo "== version, exists, list"
req "$S.version" '{"stream_id":"'"$O"'"}'
# {"version":2}
req "$S.exists" '{"stream_id":"'"$O"'"}'
# {"exists":true}
req "$S.list" '{"limit":5}'
# {"streams":["order-1"],"next":null}   (more after the other examples have run)

echo "== idempotent append: the same event_id twice returns the original result"
EVENT_ID="$("$PY" -c 'import uuid; print(uuid.uuid4())')"
req "$S.append" '{"stream_id":"payment-9-'"$RUN"'","expected_version":-1,"events":[{"event_id":"'"$EVENT_ID"'","event_type":"PaymentCaptured","data":{"amount":40}}]}'
req "$S.append" '{"stream_id":"payment-9-'"$RUN"'","expected_version":-1,"events":[{"event_id":"'"$EVENT_ID"'","event_type":"PaymentCaptured","data":{"amount":40}}]}'

echo "== binary data in JSON: base64 text with a non-JSON data_content_type"
req "$S.append" '{"stream_id":"avatar-7-'"$RUN"'","events":[{"event_type":"AvatarUploaded","data":"iVBORw0KGgo=","data_content_type":"image/png"}]}'
req "$S.forward" '{"stream_id":"avatar-7-'"$RUN"'"}'

echo "== a stream id with dots, spaces, wildcards and unicode"
req "$S.append" '{"stream_id":"orders.eu/42 ünï *>$ '"$RUN"'","events":[{"event_type":"Noted","data":"dots, spaces and wildcards are fine"}]}'

echo "== errors: a missing stream, a misspelt field"
req "$S.read" '{"stream_id":"order-404-'"$RUN"'"}'
req "$S.append" '{"stream_id":"'"$O"'","expected_verison":2,"events":[{"event_type":"X"}]}'
