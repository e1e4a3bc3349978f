#!/usr/bin/env bash
# Install BitHarbor and run it on the embedded default: bitharbord sandboxed in ./state (no disks, no root
# needed, SQLite, the packaged model), then `bitharborctl apply -f examples/harbor.yaml` and `status`.
# The daemon keeps running in the background; the last lines say how to talk to it and stop it.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_venv .venv .
STATE=${BITHARBOR_STATE:-$PWD/state}
PORT=${BITHARBOR_PORT:-8470}
mkdir -p "$STATE"
if [ -f "$STATE/bitharbord.pid" ] && kill -0 "$(cat "$STATE/bitharbord.pid")" 2>/dev/null; then
  echo "== stopping the previous bitharbord"
  kill "$(cat "$STATE/bitharbord.pid")"; sleep 1
fi
echo "== starting bitharbord --state-dir $STATE (log: $STATE/bitharbord.log)"
nohup .venv/bin/bitharbord --state-dir "$STATE" --http "127.0.0.1:$PORT" >"$STATE/bitharbord.log" 2>&1 &
echo $! > "$STATE/bitharbord.pid"
for _ in $(seq 200); do [ -S "$STATE/bitharbord.sock" ] && break; sleep 0.1; done
export BITHARBOR_SOCKET="$STATE/bitharbord.sock"
echo "== bitharborctl plan -f examples/harbor.yaml"
.venv/bin/bitharborctl plan -f examples/harbor.yaml --detailed-exitcode || [ $? -eq 2 ]
echo "== bitharborctl apply -f examples/harbor.yaml"
.venv/bin/bitharborctl apply -f examples/harbor.yaml
echo "== bitharborctl status"
.venv/bin/bitharborctl status
cat <<MSG

bitharbord is running (pid $(cat "$STATE/bitharbord.pid")), sandboxed in $STATE, HTTP on 127.0.0.1:$PORT.
  export BITHARBOR_SOCKET=$STATE/bitharbord.sock; .venv/bin/bitharborctl --help
  curl -s 127.0.0.1:$PORT/metrics | grep ^bitharbor_
  stop it: kill \$(cat $STATE/bitharbord.pid)
MSG
