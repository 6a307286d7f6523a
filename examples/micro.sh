#!/usr/bin/env bash
# Discovery through the NATS micro protocol (ADR-32): every running instance of every service.
set -u
export NATS_URL="${NATS_URL:-nats://127.0.0.1:4222}"

nats micro ls                       # one row per instance of esdb-stream
nats micro info esdb-stream         # endpoints (subjects, queue group) and per-endpoint statistics
nats micro stats esdb-stream        # requests, errors and processing time, per endpoint and instance
nats micro ping esdb-stream         # round-trip time to each instance
