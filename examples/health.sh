#!/usr/bin/env bash
# Health and memory pressure (docs/api/health.md) as `nats` CLI requests against a fresh `gater up`:
#
#   .venv/bin/gater up        # in another terminal
#   examples/health.sh
#
# Needs the nats CLI. Failing requests print the ADR-32 error headers and envelope; the script
# carries on. The replies in the comments (shortened) are from one fresh `gater up` that ran
# link.sh, scavenger.sh, causation.sh and health.sh in that order: positions differ otherwise.
set -u
export NATS_URL="${NATS_URL:-nats://127.0.0.1:4222}"

echo "== health of the whole installation"
nats req esdb.api._.health.check '{}'
# {"status":"healthy","reason":null,"checks":{"nats":{"ok":true,"rtt_ms":0.212},"jetstream":{"ok":true,"streams":11,"consumers":9,"memory":0,"storage":10204},"services":{"ok":true,"instances":{"esdb-cau…

echo "== quick check of a store"
nats req esdb.api.demo.health.quick '{}'
# {"ok":true}

echo "== a missing store"
nats req esdb.api.nope.health.quick '{}'
# Nats-Service-Error-Code: 404
# {"error":{"code":"store_not_found","message":"store 'nope' does not exist","retryable":false,"details":{"store":"nope"}}}

echo "== memory level"
nats req esdb.api.demo.memory.level '{}'
# {"level":"normal"}

echo "== memory stats"
nats req esdb.api.demo.memory.stats '{}'
# {"used":969723904,"total":25275990016,"level":"normal","ratio":0.0384,"elevated":0.7,"critical":0.85,"source":"host"}
