#!/usr/bin/env bash
# Install BitHarbor and run it on the embedded default: bitharbord sandboxed in ./state (no disks, no root
# needed, SQLite, the packaged model), then `bitharborctl apply -f examples/harbor.yaml`, six sample photos
# dropped into its watch folder, ingested and embedded, `search "photos of the beach at sunset"` and `status`.
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
PHOTOS="$STATE/root/srv/inbox/photos"  # examples/harbor.yaml's photo watch folder, inside the sandbox
echo "== six sample photos into the watch folder $PHOTOS"
.venv/bin/python scripts/demo_photos.py "$PHOTOS"
echo "== waiting until they are ingested and embedded (the model loads on the first batch)"
for _ in $(seq 120); do
  n=$(.venv/bin/bitharborctl index stats -o json 2>/dev/null | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin).get("vectors", 0))' || echo 0)
  [ "$n" -ge 6 ] && break
  sleep 1
done
echo '== bitharborctl search "photos of the beach at sunset" -k 3'
.venv/bin/bitharborctl search "photos of the beach at sunset" -k 3
echo "== bitharborctl status"
.venv/bin/bitharborctl status
cat <<MSG

bitharbord is running (pid $(cat "$STATE/bitharbord.pid")), sandboxed in $STATE, HTTP on 127.0.0.1:$PORT.
  export BITHARBOR_SOCKET=$STATE/bitharbord.sock; .venv/bin/bitharborctl --help
  curl -s 127.0.0.1:$PORT/metrics | grep ^bitharbor_
  stop it: kill \$(cat $STATE/bitharbord.pid)
MSG
