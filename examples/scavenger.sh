#!/usr/bin/env bash
# Scavenging and retention policies (docs/api/scavenger.md) as requests against `gater up`:
#
#   .venv/bin/gater up        # in another terminal
#   examples/scavenger.sh
#
# Sends with the nats CLI when it is installed, else with `gater req` (examples/_req.sh). Failing
# requests print the ADR-32 error headers and envelope; the script carries on. Ids and names end
# in this run's suffix ($RUN), so the script runs again on the same server; the replies in the
# comments (shortened) are from one fresh `gater up`, with the suffix left out.
set -euo pipefail
. "$(dirname "$0")/_req.sh"

echo "== six deposits"
req esdb.api.demo.stream.append '{"stream_id":"account-7-'"$RUN"'","events":[{"event_type":"Deposited","data":{"n":0}}]}'
# {"version":0,"position":5,"count":1}

echo "== …"
req esdb.api.demo.stream.append '{"stream_id":"account-7-'"$RUN"'","events":[{"event_type":"Deposited","data":{"n":1}}]}'
# {"version":1,"position":6,"count":1}

echo "== …"
req esdb.api.demo.stream.append '{"stream_id":"account-7-'"$RUN"'","events":[{"event_type":"Deposited","data":{"n":2}}]}'
# {"version":2,"position":7,"count":1}

echo "== …"
req esdb.api.demo.stream.append '{"stream_id":"account-7-'"$RUN"'","events":[{"event_type":"Deposited","data":{"n":3}}]}'
# {"version":3,"position":8,"count":1}

echo "== …"
req esdb.api.demo.stream.append '{"stream_id":"account-7-'"$RUN"'","events":[{"event_type":"Deposited","data":{"n":4}}]}'
# {"version":4,"position":9,"count":1}

echo "== …"
req esdb.api.demo.stream.append '{"stream_id":"account-7-'"$RUN"'","events":[{"event_type":"Deposited","data":{"n":5}}]}'
# {"version":5,"position":10,"count":1}

echo "== no snapshot yet: refused"
req esdb.api.demo.scavenger.dry_run '{"stream_id":"account-7-'"$RUN"'","keep_versions":2}'
# Nats-Service-Error-Code: 404
# {"error":{"code":"no_snapshot","message":"stream 'account-7' has no snapshot; record one or pass require_snapshot: false","retryable":false,"details":{"stream_id":"account-7"}}}

echo "== a snapshot at version 3"
req esdb.api.demo.snapshot.record '{"source_uuid":"balance","stream_uuid":"account-7-'"$RUN"'","version":3,"record":{"balance":15}}'
# {"source_uuid":"balance","stream_uuid":"account-7","version":3,"complete":true,"chunks_received":1,"size":52,"timestamp":1796098807239}

echo "== what would go"
req esdb.api.demo.scavenger.dry_run '{"stream_id":"account-7-'"$RUN"'","keep_versions":2}'
# {"stream_id":"account-7","deleted_count":4,"deleted_versions":[0,3],"archived":false,"archive_key":null,"dry_run":true,"snapshot_version":3,"truncated":false}

echo "== remove it, archived first"
SCAVENGED=$(req_body esdb.api.demo.scavenger.scavenge '{"stream_id":"account-7-'"$RUN"'","keep_versions":2,"archive":true}')
echo "$SCAVENGED"
# {"stream_id":"account-7","deleted_count":4,"deleted_versions":[0,3],"archived":true,"archive_key":"account-7/0-3@5","dry_run":false,"snapshot_version":3,"truncated":false}
ARCHIVE_KEY=$(json_get '["archive_key"]' <<<"$SCAVENGED")   # taken from the reply, for archive_read

echo "== the version is unchanged"
req esdb.api.demo.stream.version '{"stream_id":"account-7-'"$RUN"'"}'
# {"version":5}

echo "== reads from 0 return what is left"
req esdb.api.demo.stream.read '{"stream_id":"account-7-'"$RUN"'","start_version":0,"count":100}'
# {"events":[{"event_id":"01a22fd4-d5b6-7139-af48-30ace2f15256","event_type":"Deposited","stream_id":"account-7","version":4,"data":{"n":4},"metadata":{},"tags":null,"timestamp":1796098807222,"epoch_us"…

echo "== the archive gives the removed events back"
req esdb.api.demo.scavenger.archive_read '{"archive_key":"'"$ARCHIVE_KEY"'"}'
# {"events":[{"event_id":"01a22fd4-d5ad-7def-9797-9f841ab43554","event_type":"Deposited","stream_id":"account-7","version":0,"data":{"n":0},"metadata":{},"tags":null,"timestamp":1796098807214,"epoch_us"…

echo "== three order streams of this run, two appends each"
for n in 1 2 3; do
  req esdb.api.demo.stream.append '{"stream_id":"sv-order-'"$n-$RUN"'","events":[{"event_type":"OrderPlaced","data":{}}]}'
  req esdb.api.demo.stream.append '{"stream_id":"sv-order-'"$n-$RUN"'","events":[{"event_type":"OrderShipped","data":{}}]}'
done

echo "== every order stream of this run, keeping the last event (no snapshot required)"
req esdb.api.demo.scavenger.scavenge_matching '{"pattern":"sv-order-*-'"$RUN"'","keep_versions":1,"require_snapshot":false}'
# {"results":[{"stream_id":"sv-order-1","deleted_count":1,"deleted_versions":[0,0],"archived":false,"archive_key":null,"dry_run":false,"snapshot_version":null,"truncated":false},{"stream_id":"sv-order-2",…

echo "== no criterion"
req esdb.api.demo.scavenger.scavenge '{"stream_id":"account-7-'"$RUN"'"}'
# Nats-Service-Error-Code: 400
# {"error":{"code":"invalid_request","message":"invalid request","retryable":false,"details":{"field":"body","reason":"Value error, give at least one of before, before_version, max_age, keep_versions","…

echo "== an audit stream"
req esdb.api.demo.stream.append '{"stream_id":"audit-2026-'"$RUN"'","events":[{"event_type":"Audited","data":{"n":0}}]}'
# {"version":0,"position":11,"count":1}

echo "== …"
req esdb.api.demo.stream.append '{"stream_id":"audit-2026-'"$RUN"'","events":[{"event_type":"Audited","data":{"n":1}}]}'
# {"version":1,"position":12,"count":1}

echo "== …"
req esdb.api.demo.stream.append '{"stream_id":"audit-2026-'"$RUN"'","events":[{"event_type":"Audited","data":{"n":2}}]}'
# {"version":2,"position":13,"count":1}

echo "== …"
req esdb.api.demo.stream.append '{"stream_id":"audit-2026-'"$RUN"'","events":[{"event_type":"Audited","data":{"n":3}}]}'
# {"version":3,"position":14,"count":1}

echo "== …"
req esdb.api.demo.stream.append '{"stream_id":"audit-2026-'"$RUN"'","events":[{"event_type":"Audited","data":{"n":4}}]}'
# {"version":4,"position":15,"count":1}

echo "== a retention policy"
req esdb.api.demo.scavenger.policy_set '{"name":"audit-retention-'"$RUN"'","pattern":"audit-*-'"$RUN"'","keep_versions":2,"require_snapshot":false,"interval_s":3600}'
# {"name":"audit-retention","pattern":"audit-*","max_age":null,"keep_versions":2,"require_snapshot":false,"archive":false,"interval_s":3600.0,"created_at":1796098807297,"updated_at":1796098807297,"runs"…
sleep 2

echo "== its last run (a moment later)"
req esdb.api.demo.scavenger.policy_get '{"name":"audit-retention-'"$RUN"'"}'
# {"name":"audit-retention","pattern":"audit-*","max_age":null,"keep_versions":2,"require_snapshot":false,"archive":false,"interval_s":3600.0,"created_at":1796098807297,"updated_at":1796098807297,"runs"…

echo "== every policy"
req esdb.api.demo.scavenger.policy_list '{}'
# {"policies":[{"name":"audit-retention","pattern":"audit-*","max_age":null,"keep_versions":2,"require_snapshot":false,"archive":false,"interval_s":3600.0,"created_at":1796098807297,"updated_at":1796098…

echo "== remove it"
req esdb.api.demo.scavenger.policy_delete '{"name":"audit-retention-'"$RUN"'"}'
# {"ok":true}
