#!/usr/bin/env bash
# Store administration: create a store (idempotent) and describe it.
#
# Under `gater up` stores are created on first use; under `gater serve` they must be created
# first (or listed under [stores.<id>] in the configuration), else requests get store_not_found.
set -u
export NATS_URL="${NATS_URL:-nats://127.0.0.1:4222}"
STORE="${STORE:-billing}"

echo "== create (created: true the first time, false afterwards; settings of an existing store are not changed)"
nats req "esdb.api.$STORE.store.create" '{"storage":"file","duplicate_window_s":600,"description":"billing events"}'
# {"store":"billing","replicas":1,"storage":"file","max_age_s":0.0,"max_bytes":-1,"duplicate_window_s":600.0,"events":0,"streams":0,"created":true}
nats req "esdb.api.$STORE.store.create" '{"storage":"file","duplicate_window_s":600,"description":"billing events"}'

echo "== info"
nats req "esdb.api.$STORE.store.info" '{}'

echo "== replicas: 3 needs a JetStream cluster (nats/cluster/); on a single server this is 'internal' with err_code 10074"
nats req "esdb.api.$STORE-r3.store.create" '{"replicas":3}'
