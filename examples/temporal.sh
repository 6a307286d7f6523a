#!/usr/bin/env bash
# Temporal reads: read_until, read_range and version_at take epoch_us (microseconds), inclusive.
#
#   .venv/bin/gater up        # in another terminal
#   examples/temporal.sh
#
# Needs the nats CLI and python3 (to pick epoch_us out of a reply).
set -u
export NATS_URL="${NATS_URL:-nats://127.0.0.1:4222}"
S="esdb.api.${STORE:-demo}.stream"
ID="sensor-$$"

nats req "$S.append" "{\"stream_id\":\"$ID\",\"events\":[{\"event_type\":\"Reading\",\"data\":{\"c\":20.5}}]}"
sleep 0.2
nats req "$S.append" "{\"stream_id\":\"$ID\",\"events\":[{\"event_type\":\"Reading\",\"data\":{\"c\":21.0}},{\"event_type\":\"Reading\",\"data\":{\"c\":21.2}}]}"
sleep 0.2
nats req "$S.append" "{\"stream_id\":\"$ID\",\"events\":[{\"event_type\":\"Reading\",\"data\":{\"c\":22.4}}]}"

# epoch_us of each version (versions 1 and 2 share one append, so they share epoch_us)
EVENTS=$(nats req --raw "$S.forward" "{\"stream_id\":\"$ID\"}")
us() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])["events"][int(sys.argv[2])]["epoch_us"])' "$EVENTS" "$1"; }
T0=$(us 0); T1=$(us 1); T3=$(us 3)
echo "epoch_us: v0=$T0 v1,v2=$T1 v3=$T3"

echo "== version_at the second append: 2"
nats req "$S.version_at" "{\"stream_id\":\"$ID\",\"timestamp\":$T1}"
echo "== version_at one microsecond before the first event: -1"
nats req "$S.version_at" "{\"stream_id\":\"$ID\",\"timestamp\":$((T0 - 1))}"
echo "== read_until the second append, newest first, at most 2: versions 2, 1"
nats req "$S.read_until" "{\"stream_id\":\"$ID\",\"timestamp\":$T1,\"direction\":\"backward\",\"limit\":2}"
echo "== read_range from the second append to the third, at most 2: versions 1, 2"
nats req "$S.read_range" "{\"stream_id\":\"$ID\",\"from_ts\":$T1,\"to_ts\":$T3,\"limit\":2}"
