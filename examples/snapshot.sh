#!/usr/bin/env bash
# The snapshot requests of docs/api/snapshot.md, as requests against `gater up`.
#
#   .venv/bin/gater up            # in another terminal
#   examples/snapshot.sh          # NATS_URL=nats://host:port examples/snapshot.sh for another server
#
# Sends with the nats CLI when it is installed, else with `gater req` (examples/_req.sh). Failing
# requests print the ADR-32 error headers and envelope; the script carries on. Ids and names end
# in this run's suffix ($RUN), so the script runs again on the same server; the replies in the
# comments (shortened) are from one fresh `gater up`, with the suffix left out.
set -euo pipefail
. "$(dirname "$0")/_req.sh"
STORE="${STORE:-demo}"

echo "== record version 10"
req "esdb.api.$STORE.snapshot.record" '{"source_uuid":"orders","stream_uuid":"order-1-'"$RUN"'","version":10,"record":{"status":"shipped","lines":2,"total":42.5},"metadata":{"schema":"order-v1"}}'
# {"source_uuid":"orders","stream_uuid":"order-1","version":10,"complete":true,"chunks_received":1,"size":93,"timestamp":1796097832014}

echo "== record version 25"
req "esdb.api.$STORE.snapshot.record" '{"source_uuid":"orders","stream_uuid":"order-1-'"$RUN"'","version":25,"record":{"status":"delivered","lines":2,"total":42.5}}'
# {"source_uuid":"orders","stream_uuid":"order-1","version":25,"complete":true,"chunks_received":1,"size":79,"timestamp":1796097832016}

echo "== record version 20 (out of order)"
req "esdb.api.$STORE.snapshot.record" '{"source_uuid":"orders","stream_uuid":"order-1-'"$RUN"'","version":20,"record":{"status":"in_transit","lines":2,"total":42.5}}'
# {"source_uuid":"orders","stream_uuid":"order-1","version":20,"complete":true,"chunks_received":1,"size":80,"timestamp":1796097832018}

echo "== latest = the highest version"
req "esdb.api.$STORE.snapshot.read" '{"source_uuid":"orders","stream_uuid":"order-1-'"$RUN"'","version":"latest"}'
# {"source_uuid":"orders","stream_uuid":"order-1","version":25,"data":{"status":"delivered","lines":2,"total":42.5},"metadata":{},"timestamp":1796097832016,"data_content_type":"application/json","size":79,"chunks":null}

echo "== an exact version"
req "esdb.api.$STORE.snapshot.read" '{"source_uuid":"orders","stream_uuid":"order-1-'"$RUN"'","version":10}'
# {"source_uuid":"orders","stream_uuid":"order-1","version":10,"data":{"status":"shipped","lines":2,"total":42.5},"metadata":{"schema":"order-v1"},"timestamp":1796097832014,"data_content_type":"application/json","size":93,"chunks":null}

echo "== a missing version: not_found"
req "esdb.api.$STORE.snapshot.read" '{"source_uuid":"orders","stream_uuid":"order-1-'"$RUN"'","version":11}'
# Nats-Service-Error-Code: 404
# {"error":{"code":"not_found","message":"no snapshot at version 11","retryable":false,"details":{"source_uuid":"orders","stream_uuid":"order-1","version":11}}}

echo "== another source: not_found"
req "esdb.api.$STORE.snapshot.read" '{"source_uuid":"billing","stream_uuid":"order-1-'"$RUN"'"}'
# Nats-Service-Error-Code: 404
# {"error":{"code":"not_found","message":"no snapshot for this source and stream","retryable":false,"details":{"source_uuid":"billing","stream_uuid":"order-1","version":"latest"}}}

echo "== list, ascending"
req "esdb.api.$STORE.snapshot.list" '{"source_uuid":"orders","stream_uuid":"order-1-'"$RUN"'"}'

echo "== list without data"
req "esdb.api.$STORE.snapshot.list" '{"source_uuid":"orders","stream_uuid":"order-1-'"$RUN"'","include_data":false}'

echo "== delete version 25"
req "esdb.api.$STORE.snapshot.delete" '{"source_uuid":"orders","stream_uuid":"order-1-'"$RUN"'","version":25}'
# {"ok":true}

echo "== latest is now 20"
req "esdb.api.$STORE.snapshot.read" '{"source_uuid":"orders","stream_uuid":"order-1-'"$RUN"'"}'
# {"source_uuid":"orders","stream_uuid":"order-1","version":20,"data":{"status":"in_transit","lines":2,"total":42.5},"metadata":{},"timestamp":1796097832018,"data_content_type":"application/json","size":80,"chunks":null}

echo "== no record: invalid_request"
req "esdb.api.$STORE.snapshot.record" '{"source_uuid":"orders","stream_uuid":"order-1-'"$RUN"'","version":30}'
# Nats-Service-Error-Code: 400
# {"error":{"code":"invalid_request","message":"invalid request","retryable":false,"details":{"field":"body","reason":"Value error, record is required (or the chunked form: upload_id, chunk_index, chunk_count, chunk)","errors":[{"field":"body","reason":"Value error, record is required (or the chunked form: upload_id, chunk_index, chunk_count, chunk)"}]}}}

echo "== a binary snapshot (base64 in JSON)"
req "esdb.api.$STORE.snapshot.record" '{"source_uuid":"orders","stream_uuid":"cart-7-'"$RUN"'","version":3,"record":"AAECAwQ=","data_content_type":"application/octet-stream"}'
# {"source_uuid":"orders","stream_uuid":"cart-7","version":3,"complete":true,"chunks_received":1,"size":72,"timestamp":1796097832035}

echo "== read it back"
req "esdb.api.$STORE.snapshot.read" '{"source_uuid":"orders","stream_uuid":"cart-7-'"$RUN"'"}'
# {"source_uuid":"orders","stream_uuid":"cart-7","version":3,"data":"AAECAwQ=","metadata":{},"timestamp":1796097832035,"data_content_type":"application/octet-stream","size":72,"chunks":null}

echo "== chunked: first of two chunks"
req "esdb.api.$STORE.snapshot.record" '{"source_uuid":"orders","stream_uuid":"ledger-1-'"$RUN"'","version":500,"upload_id":"6f1c2a9e4b7d4c3e","chunk_index":0,"chunk_count":2,"chunk":"eyJiYWxhbmNlIjog"}'
# {"source_uuid":"orders","stream_uuid":"ledger-1","version":500,"complete":false,"chunks_received":1,"size":null,"timestamp":null}

echo "== the same chunk again: acknowledged, not stored twice"
req "esdb.api.$STORE.snapshot.record" '{"source_uuid":"orders","stream_uuid":"ledger-1-'"$RUN"'","version":500,"upload_id":"6f1c2a9e4b7d4c3e","chunk_index":0,"chunk_count":2,"chunk":"eyJiYWxhbmNlIjog"}'
# {"source_uuid":"orders","stream_uuid":"ledger-1","version":500,"complete":false,"chunks_received":1,"size":null,"timestamp":null}

echo "== not complete yet: not_found"
req "esdb.api.$STORE.snapshot.read" '{"source_uuid":"orders","stream_uuid":"ledger-1-'"$RUN"'"}'
# Nats-Service-Error-Code: 404
# {"error":{"code":"not_found","message":"no snapshot for this source and stream","retryable":false,"details":{"source_uuid":"orders","stream_uuid":"ledger-1","version":"latest"}}}

echo "== the last chunk completes it"
req "esdb.api.$STORE.snapshot.record" '{"source_uuid":"orders","stream_uuid":"ledger-1-'"$RUN"'","version":500,"upload_id":"6f1c2a9e4b7d4c3e","chunk_index":1,"chunk_count":2,"chunk":"MTIzNC41fQ==","metadata":{"entries":9000}}'
# {"source_uuid":"orders","stream_uuid":"ledger-1","version":500,"complete":true,"chunks_received":2,"size":19,"timestamp":1796097832050}

echo "== read: data null, chunks to fetch"
req "esdb.api.$STORE.snapshot.read" '{"source_uuid":"orders","stream_uuid":"ledger-1-'"$RUN"'"}'
# {"source_uuid":"orders","stream_uuid":"ledger-1","version":500,"data":null,"metadata":{"entries":9000},"timestamp":1796097832050,"data_content_type":"application/json","size":19,"chunks":{"upload_id":"6f1c2a9e4b7d4c3e","count":2,"size":19,"digest":"SHA-256=n7E_F0fNS11CM41WZZaEctnU7_jsQnzCKFTBbO_b3WA="}}

echo "== chunk 0"
req "esdb.api.$STORE.snapshot.read_chunk" '{"source_uuid":"orders","stream_uuid":"ledger-1-'"$RUN"'","version":500,"upload_id":"6f1c2a9e4b7d4c3e","chunk_index":0}'
# {"chunk_index":0,"chunk":"eyJiYWxhbmNlIjog"}

echo "== chunk 1"
req "esdb.api.$STORE.snapshot.read_chunk" '{"source_uuid":"orders","stream_uuid":"ledger-1-'"$RUN"'","version":500,"upload_id":"6f1c2a9e4b7d4c3e","chunk_index":1}'
# {"chunk_index":1,"chunk":"MTIzNC41fQ=="}

echo "== a chunk out of order: invalid_request"
req "esdb.api.$STORE.snapshot.record" '{"source_uuid":"orders","stream_uuid":"ledger-2-'"$RUN"'","version":1,"upload_id":"0b5d9e3f8a2c4417","chunk_index":1,"chunk_count":3,"chunk":"eyJ4Ijox"}'
# Nats-Service-Error-Code: 400
# {"error":{"code":"invalid_request","message":"chunk 1 out of order: the next chunk of this upload is 0","retryable":false,"details":{"field":"chunk_index","reason":"out of order","expected":0}}}

echo "== a stale upload_id: not_found"
req "esdb.api.$STORE.snapshot.read_chunk" '{"source_uuid":"orders","stream_uuid":"ledger-1-'"$RUN"'","version":500,"upload_id":"ffffffffffffffff","chunk_index":0}'
# Nats-Service-Error-Code: 404
# {"error":{"code":"not_found","message":"no chunked snapshot with this upload_id at this version (recorded again or deleted?); read it again","retryable":false,"details":{"source_uuid":"orders","stream_uuid":"ledger-1","version":500,"upload_id":"ffffffffffffffff"}}}
