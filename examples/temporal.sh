#!/usr/bin/env bash
# Temporal reads: read_until, read_range and version_at take epoch_us (microseconds), inclusive.
#
#   .venv/bin/gater up        # in another terminal
#   examples/temporal.sh
#
# Sends with the nats CLI when it is installed, else with `gater req` (examples/_req.sh); picks
# epoch_us out of a reply with Python. The stream id ends in this run's suffix.
set -euo pipefail
. "$(dirname "$0")/_req.sh"
S="esdb.api.${STORE:-demo}.stream"
ID="sensor-$RUN"

req "$S.append" "{\"stream_id\":\"$ID\",\"events\":[{\"event_type\":\"Reading\",\"data\":{\"c\":20.5}}]}"
sleep 0.2
req "$S.append" "{\"stream_id\":\"$ID\",\"events\":[{\"event_type\":\"Reading\",\"data\":{\"c\":21.0}},{\"event_type\":\"Reading\",\"data\":{\"c\":21.2}}]}"
sleep 0.2
req "$S.append" "{\"stream_id\":\"$ID\",\"events\":[{\"event_type\":\"Reading\",\"data\":{\"c\":22.4}}]}"

# epoch_us of each version (versions 1 and 2 share one append, so they share epoch_us)
EVENTS=$(req_body "$S.forward" "{\"stream_id\":\"$ID\"}")
T0=$(json_get '["events"][0]["epoch_us"]' <<<"$EVENTS")
T1=$(json_get '["events"][1]["epoch_us"]' <<<"$EVENTS")
T3=$(json_get '["events"][3]["epoch_us"]' <<<"$EVENTS")
echo "epoch_us: v0=$T0 v1,v2=$T1 v3=$T3"

echo "== version_at the second append: 2"
req "$S.version_at" "{\"stream_id\":\"$ID\",\"timestamp\":$T1}"
echo "== version_at one microsecond before the first event: -1"
req "$S.version_at" "{\"stream_id\":\"$ID\",\"timestamp\":$((T0 - 1))}"
echo "== read_until the second append, newest first, at most 2: versions 2, 1"
req "$S.read_until" "{\"stream_id\":\"$ID\",\"timestamp\":$T1,\"direction\":\"backward\",\"limit\":2}"
echo "== read_range from the second append to the third, at most 2: versions 1, 2"
req "$S.read_range" "{\"stream_id\":\"$ID\",\"from_ts\":$T1,\"to_ts\":$T3,\"limit\":2}"
