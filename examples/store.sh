#!/usr/bin/env bash
# Store administration: create a store (idempotent) and describe it.
#
# Under `gater up` stores are created on first use; under `gater serve` they must be created
# first (or listed under [stores.<id>] in the configuration), else requests get store_not_found.
# Sends with the nats CLI when it is installed, else with `gater req` (examples/_req.sh).
set -euo pipefail
. "$(dirname "$0")/_req.sh"
STORE="${STORE:-billing}"

echo "== create (created: true the first time, false afterwards; settings of an existing store are not changed)"
req "esdb.api.$STORE.store.create" '{"storage":"file","duplicate_window_s":600,"description":"billing events"}'
# {"store":"billing","replicas":1,"storage":"file","max_age_s":0.0,"max_bytes":-1,"duplicate_window_s":600.0,"events":0,"streams":0,"created":true}
req "esdb.api.$STORE.store.create" '{"storage":"file","duplicate_window_s":600,"description":"billing events"}'

echo "== info"
req "esdb.api.$STORE.store.info" '{}'

echo "== replicas: 3 needs a JetStream cluster (nats/cluster/); on a single server: invalid_request (400) with err_code 10074"
req "esdb.api.$STORE-r3.store.create" '{"replicas":3}'
# Nats-Service-Error-Code: 400
# {"error":{"code":"invalid_request","message":"JetStream refused the store: replicas > 1 not supported in non-clustered mode","retryable":false,"details":{"field":"store","reason":"replicas > 1 not supported in non-clustered mode","err_code":10074}}}
