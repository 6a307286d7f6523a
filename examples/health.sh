#!/usr/bin/env bash
# Health and memory pressure (docs/api/health.md) as requests against `gater up`:
#
#   .venv/bin/gater up        # in another terminal
#   examples/health.sh
#
# Sends with the nats CLI when it is installed, else with `gater req` (examples/_req.sh). Failing
# requests print the ADR-32 error headers and envelope; the script carries on. Ids and names end
# in this run's suffix ($RUN), so the script runs again on the same server; the replies in the
# comments (shortened) are from one fresh `gater up`, with the suffix left out.
set -euo pipefail
. "$(dirname "$0")/_req.sh"

echo "== health of the whole installation"
req esdb.api._.health.check '{}'
# {"status":"healthy","reason":null,"checks":{"nats":{"ok":true,"rtt_ms":0.212},"jetstream":{"ok":true,"streams":11,"consumers":9,"memory":0,"storage":10204},"services":{"ok":true,"instances":{"esdb-cau…

echo "== a store exists once something was written to it"
req esdb.api.demo.stream.append '{"stream_id":"probe-'"$RUN"'","events":[{"event_type":"Probed","data":{}}]}'

echo "== quick check of a store"
req esdb.api.demo.health.quick '{}'
# {"ok":true}

echo "== a missing store"
req esdb.api.nope.health.quick '{}'
# Nats-Service-Error-Code: 404
# {"error":{"code":"store_not_found","message":"store 'nope' does not exist","retryable":false,"details":{"store":"nope"}}}

echo "== memory level"
req esdb.api.demo.memory.level '{}'
# {"level":"normal"}

echo "== memory stats"
req esdb.api.demo.memory.stats '{}'
# {"used":969723904,"total":25275990016,"level":"normal","ratio":0.0384,"elevated":0.7,"critical":0.85,"source":"host"}
