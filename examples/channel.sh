#!/usr/bin/env bash
# Channels (docs/api/channel.md) against `gater up` started with a secret:
#
#   ESDB_GATER_CHANNELS__HMAC_SECRET=demo-secret .venv/bin/gater up     # in another terminal
#   nats sub 'esdb.ch.>'   (or .venv/bin/gater sub 'esdb.ch.>')         # in a third, to watch deliveries
#   examples/channel.sh
#
# Sends with the nats CLI when it is installed, else with `gater req` (examples/_req.sh); signs
# with openssl when it is there, else with Python (the signature is computed here, per
# docs/security.md). Failing requests print the ADR-32 error headers and envelope; the script
# carries on. The signed message carries this run's suffix ($RUN), so a second run is not a
# replay of the first. Against a server with another secret the signed publish answers
# invalid_signature. BURST (default 150) sets the number of quick publishes at the end.
set -euo pipefail
. "$(dirname "$0")/_req.sh"
SECRET="${SECRET:-demo-secret}"
BURST="${BURST:-150}"
C="esdb.api._.channel"

echo "== the channel table"
req "$C.list" '{}'
# {"channels":[{"name":"alerts","priority":"critical","rate_limit":null,"hmac":"required",...},...]}

echo "== publish on events (HMAC optional); subscribers of esdb.ch.events.user.* get it"
req "$C.publish" '{"channel":"events","topic":"user.created","message":{"user_id":"u-42","name":"Ada"}}'
# {"ok":true,"seq":null}

echo "== alerts need a signature"
req "$C.publish" '{"channel":"alerts","topic":"disk.full","message":{"host":"db-1","used":0.97}}'
# Nats-Service-Error-Code: 401
# {"error":{"code":"signature_required",...,"details":{"reason":"missing_signature"}}}

echo "== sign: HMAC-SHA256 over the canonical JSON (sorted keys, no spaces), Base64"
NOW=$(date +%s)
CANONICAL="{\"host\":\"db-1\",\"run\":\"$RUN\",\"signed_at\":$NOW,\"used\":0.97}"
if command -v openssl >/dev/null; then
  SIG=$(printf '%s' "$CANONICAL" | openssl dgst -sha256 -hmac "$SECRET" -binary | base64)
else
  SIG=$("$PY" -c 'import base64,hashlib,hmac,sys; print(base64.b64encode(hmac.new(sys.argv[1].encode(), sys.argv[2].encode(), hashlib.sha256).digest()).decode())' "$SECRET" "$CANONICAL")
fi
MSG="{\"host\":\"db-1\",\"used\":0.97,\"run\":\"$RUN\",\"signed_at\":$NOW,\"signature\":\"$SIG\"}"
req "$C.publish" "{\"channel\":\"alerts\",\"topic\":\"disk.full\",\"message\":$MSG}"
# {"ok":true,"seq":1}

echo "== the same message again is a replay"
req "$C.publish" "{\"channel\":\"alerts\",\"topic\":\"disk.full\",\"message\":$MSG}"
# {"error":{"code":"invalid_signature","message":"this signed message was already accepted (replay)",...,"details":{"reason":"replayed"}}}

echo "== what the durable alerts channel kept (how a subscriber that was away catches up)"
req "$C.history" '{"channel":"alerts","topic":"disk.>","after_seq":0,"limit":10}'
# {"messages":[{"seq":1,"channel":"alerts","topic":"disk.full","message":{...},"published_at":...}],"last_seq":1,"more":false}

echo "== $BURST quick publishes on one health topic: the first 100 of a second ok, the rest rate_limited"
TOPIC="db-$RUN"
for i in $(seq 1 "$BURST"); do
  req "$C.publish" "{\"channel\":\"health\",\"topic\":\"$TOPIC\",\"message\":{\"i\":$i}}" 2>&1
done | grep -c rate_limited || true
# about 50 with the nats CLI (fewer if the loop spans more than one second; `gater req` starts
# a Python process per request, so its loop is too slow to reach the limit)
