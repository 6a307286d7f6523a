#!/usr/bin/env bash
# Channels (docs/api/channel.md) as `nats` CLI requests against `gater up` started with a secret:
#
#   ESDB_GATER_CHANNELS__HMAC_SECRET=demo-secret .venv/bin/gater up     # in another terminal
#   nats sub 'esdb.ch.>'                                                # in a third, to watch deliveries
#   examples/channel.sh
#
# Needs the nats CLI and openssl (the signature is computed here, in shell, per docs/security.md).
# Failing requests print the ADR-32 error headers and envelope; the script carries on. The replies
# in the comments are from a fresh `gater up`.
set -u
export NATS_URL="${NATS_URL:-nats://127.0.0.1:4222}"
SECRET="${SECRET:-demo-secret}"
C="esdb.api._.channel"

echo "== the channel table"
nats req "$C.list" '{}'
# {"channels":[{"name":"alerts","priority":"critical","rate_limit":null,"hmac":"required",...},...]}

echo "== publish on events (HMAC optional); subscribers of esdb.ch.events.user.* get it"
nats req "$C.publish" '{"channel":"events","topic":"user.created","message":{"user_id":"u-42","name":"Ada"}}'
# {"ok":true,"seq":null}

echo "== alerts need a signature"
nats req "$C.publish" '{"channel":"alerts","topic":"disk.full","message":{"host":"db-1","used":0.97}}'
# Nats-Service-Error-Code: 401
# {"error":{"code":"signature_required",...,"details":{"reason":"missing_signature"}}}

echo "== sign: HMAC-SHA256 over the canonical JSON (sorted keys, no spaces), Base64"
NOW=$(date +%s)
CANONICAL="{\"host\":\"db-1\",\"signed_at\":$NOW,\"used\":0.97}"
SIG=$(printf '%s' "$CANONICAL" | openssl dgst -sha256 -hmac "$SECRET" -binary | base64)
MSG="{\"host\":\"db-1\",\"used\":0.97,\"signed_at\":$NOW,\"signature\":\"$SIG\"}"
nats req "$C.publish" "{\"channel\":\"alerts\",\"topic\":\"disk.full\",\"message\":$MSG}"
# {"ok":true,"seq":1}

echo "== the same message again is a replay"
nats req "$C.publish" "{\"channel\":\"alerts\",\"topic\":\"disk.full\",\"message\":$MSG}"
# {"error":{"code":"invalid_signature","message":"this signed message was already accepted (replay)",...,"details":{"reason":"replayed"}}}

echo "== what the durable alerts channel kept (how a subscriber that was away catches up)"
nats req "$C.history" '{"channel":"alerts","topic":"disk.>","after_seq":0,"limit":10}'
# {"messages":[{"seq":1,"channel":"alerts","topic":"disk.full","message":{...},"published_at":...}],"last_seq":1,"more":false}

echo "== 150 quick publishes on one health topic: 100 ok, the rest rate_limited"
for i in $(seq 1 150); do
  nats req "$C.publish" "{\"channel\":\"health\",\"topic\":\"db-1\",\"message\":{\"i\":$i}}" 2>&1
done | grep -c rate_limited
# about 50 (fewer if the loop spans more than one second)
