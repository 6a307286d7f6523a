# Sourced by every example script: `req` and `sub` send with the nats CLI when it is installed,
# else with `gater req` / `gater sub`, which pip installs with esdb-gater (same arguments, the
# reply printed the same way: the body, or the ADR-32 error headers, a blank line and the
# envelope). Both exit 0 on an error reply, so the scripts carry on past the documented errors;
# an unreachable server stops them (set -e).
#
#   NATS_URL   the server (default nats://127.0.0.1:4222, as `gater up` prints)
#   RUN        a suffix for this run's stream ids and names (default: from the clock), so a
#              script can run any number of times on the same server
export NATS_URL="${NATS_URL:-nats://127.0.0.1:4222}"
RUN="${RUN:-$(date +%s%N | tail -c 10)}"

_EXAMPLES_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if command -v gater >/dev/null; then
  GATER="${GATER:-gater}"
else
  GATER="${GATER:-$_EXAMPLES_DIR/../.venv/bin/gater}"   # the README's install, not activated
fi
if [ -x "$_EXAMPLES_DIR/../.venv/bin/python" ]; then PY="${PY:-$_EXAMPLES_DIR/../.venv/bin/python}"; else PY="${PY:-python3}"; fi

req() { if command -v nats >/dev/null; then nats req "$@"; else "$GATER" req "$@"; fi; }
# the reply body only (to pick values out of it)
req_body() { if command -v nats >/dev/null; then nats req --raw "$@"; else "$GATER" req "$@"; fi; }
sub() { if command -v nats >/dev/null; then nats sub "$@"; else "$GATER" sub "$@"; fi; }
# json_get EXPR: a value out of the JSON on stdin, e.g. req_body … | json_get '["events"][0]["epoch_us"]'
json_get() { "$PY" -c 'import json,sys; print(eval("json.load(sys.stdin)" + sys.argv[1]))' "$1"; }
