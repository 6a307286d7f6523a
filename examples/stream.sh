#!/usr/bin/env bash
# The README walk-through, as `nats` CLI requests against `gater up`.
#
#   .venv/bin/gater up            # in another terminal
#   examples/stream.sh            # NATS_URL=nats://host:port examples/stream.sh for another server
#
# Needs the nats CLI (https://github.com/nats-io/natscli). Requests that fail print the ADR-32
# error headers and the error envelope; the script carries on. The replies in the comments are
# from a fresh `gater up`.
set -u
export NATS_URL="${NATS_URL:-nats://127.0.0.1:4222}"
STORE="${STORE:-demo}"
S="esdb.api.$STORE.stream"

echo "== append two events to a new stream (expected_version -1 = NO_STREAM)"
nats req "$S.append" '{"stream_id":"order-1","expected_version":-1,"events":[{"event_type":"OrderPlaced","data":{"sku":"A-1","qty":2}},{"event_type":"ItemAdded","data":{"sku":"B-7","qty":1},"metadata":{"correlation_id":"c-1"}}]}'
# {"version":1,"position":1,"count":2}

echo "== append with a stale expected version: wrong_expected_version with expected/actual"
nats req "$S.append" '{"stream_id":"order-1","expected_version":0,"events":[{"event_type":"OrderShipped","data":{"carrier":"DHL"}}]}'
# Nats-Service-Error-Code: 409
# {"error":{"code":"wrong_expected_version","message":"expected version 0, stream 'order-1' is at 1","retryable":false,"details":{"expected":0,"actual":1,"stream_id":"order-1"}}}

echo "== append with the right version"
nats req "$S.append" '{"stream_id":"order-1","expected_version":1,"events":[{"event_type":"OrderShipped","data":{"carrier":"DHL"}}]}'
# {"version":2,"position":2,"count":1}

echo "== read forward from version 0"
nats req "$S.forward" '{"stream_id":"order-1","start_version":0,"count":10}'

echo "== read backward from the last event"
nats req "$S.backward" '{"stream_id":"order-1","start_version":-1,"count":2}'

echo "== the same with stream.read and an explicit direction"
nats req "$S.read" '{"stream_id":"order-1","start_version":2,"count":2,"direction":"backward"}'

echo "== version, exists, list"
nats req "$S.version" '{"stream_id":"order-1"}'
# {"version":2}
nats req "$S.exists" '{"stream_id":"order-1"}'
# {"exists":true}
nats req "$S.list" '{}'
# {"streams":["order-1"],"next":null}   (more after the other examples have run)

echo "== idempotent append: the same event_id twice returns the original result"
nats req "$S.append" '{"stream_id":"payment-9","expected_version":-1,"events":[{"event_id":"0192f0c4-6a1e-7c3a-9b1d-5e2f4a6b8c01","event_type":"PaymentCaptured","data":{"amount":40}}]}'
nats req "$S.append" '{"stream_id":"payment-9","expected_version":-1,"events":[{"event_id":"0192f0c4-6a1e-7c3a-9b1d-5e2f4a6b8c01","event_type":"PaymentCaptured","data":{"amount":40}}]}'

echo "== binary data in JSON: base64 text with a non-JSON data_content_type"
nats req "$S.append" '{"stream_id":"avatar-7","events":[{"event_type":"AvatarUploaded","data":"iVBORw0KGgo=","data_content_type":"image/png"}]}'
nats req "$S.forward" '{"stream_id":"avatar-7"}'

echo "== a stream id with dots, spaces, wildcards and unicode"
nats req "$S.append" '{"stream_id":"orders.eu/42 ünï *>$","events":[{"event_type":"Noted","data":"dots, spaces and wildcards are fine"}]}'

echo "== errors: a missing stream, a misspelt field"
nats req "$S.read" '{"stream_id":"order-404"}'
nats req "$S.append" '{"stream_id":"order-1","expected_verison":2,"events":[{"event_type":"X"}]}'
