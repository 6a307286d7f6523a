#!/usr/bin/env bash
# Transactions over several streams, checkpoints and the store-wide read (docs/api/stream.md,
# "Transactions and the store-wide read"), against `gater up`:
#
#   .venv/bin/gater up                # in another terminal
#   examples/transactions.sh          # NATS_URL=nats://host:port examples/transactions.sh for another server
#
# Stream ids and the checkpoint name end in this run's suffix ($RUN), so the script can run again
# on the same server; the replies in the comments are from a fresh `gater up` (suffix left out).
set -euo pipefail
. "$(dirname "$0")/_req.sh"
STORE="${STORE:-bank}"
S="esdb.api.$STORE.stream"
A="acct-A-$RUN"
B="acct-B-$RUN"

echo "== open two accounts in one transaction"
req "$S.append_multi" '{"appends":[{"stream_id":"'"$A"'","expected_version":-1,"events":[{"event_type":"Opened","data":{"balance":100}}]},{"stream_id":"'"$B"'","expected_version":-1,"events":[{"event_type":"Opened","data":{"balance":0}}]}]}'
# {"results":[{"stream_id":"acct-A","version":0,"position":1,"count":1,"first_notification_id":16384},{"stream_id":"acct-B","version":0,"position":2,"count":1,"first_notification_id":32768}],"position":2}

echo "== a transfer: both streams at their expected versions, or nothing"
req "$S.append_multi" '{"appends":[{"stream_id":"'"$A"'","expected_version":0,"events":[{"event_type":"Debited","data":{"amount":30}}]},{"stream_id":"'"$B"'","expected_version":0,"events":[{"event_type":"Credited","data":{"amount":30}}]}]}'
# {"results":[{"stream_id":"acct-A","version":1,…},{"stream_id":"acct-B","version":1,…}],"position":4}

echo "== the same transfer again: wrong_expected_version naming both streams, nothing stored"
req "$S.append_multi" '{"appends":[{"stream_id":"'"$A"'","expected_version":0,"events":[{"event_type":"Debited","data":{"amount":30}}]},{"stream_id":"'"$B"'","expected_version":0,"events":[{"event_type":"Credited","data":{"amount":30}}]}]}'
# Nats-Service-Error-Code: 409
# {"error":{"code":"wrong_expected_version",…,"details":{"conflicts":[{"stream_id":"acct-A","expected_version":0,"actual_version":1},{"stream_id":"acct-B","expected_version":0,"actual_version":1}]}}}

echo "== an event and a checkpoint together; the same checkpoint again is refused"
req "$S.append_multi" '{"appends":[{"stream_id":"mail-'"$RUN"'","events":[{"event_type":"StatementSent"}]}],"checkpoint":{"name":"mailer-'"$RUN"'","position":65536}}'
req "$S.append_multi" '{"appends":[],"checkpoint":{"name":"mailer-'"$RUN"'","position":65536}}'
# Nats-Service-Error-Code: 409 … "details":{"checkpoint":{"name":"mailer","position":65536,"stored_position":65536}}
req "$S.checkpoint" '{"name":"mailer-'"$RUN"'"}'
# {"name":"mailer","position":65536}

echo "== the whole store in log order, three events a page, then the newest two backward"
req "$S.read_all" '{"limit":3}'
req "$S.read_all" '{"direction":"backward","limit":2}'
echo "== only this run's accounts"
req "$S.read_all" '{"stream_prefix":"acct-","event_types":["Debited","Credited"],"direction":"backward","limit":2}'
