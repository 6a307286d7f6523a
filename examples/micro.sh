#!/usr/bin/env bash
# Discovery through the NATS micro protocol (ADR-32): every running instance of every service.
# With the nats CLI: its `micro` commands. Without it: the same $SRV subjects with `gater req`,
# which prints the first instance's answer.
set -euo pipefail
. "$(dirname "$0")/_req.sh"

if command -v nats >/dev/null; then
  nats micro ls                       # one row per instance of esdb-stream
  nats micro info esdb-stream         # endpoints (subjects, queue group) and per-endpoint statistics
  nats micro stats esdb-stream        # requests, errors and processing time, per endpoint and instance
  nats micro ping esdb-stream         # round-trip time to each instance
else
  req '$SRV.PING.esdb-stream' ''      # name, id and version of one instance
  req '$SRV.INFO.esdb-stream' ''      # its endpoints: subjects, queue group, schema metadata
  req '$SRV.STATS.esdb-stream' ''     # requests, errors and processing time, per endpoint
fi
