#!/usr/bin/env bash
# make demo-live: the demo's processors on the embedded log while virtual
# devices send the real data sets live, over HTTP and over MQTT (the same
# readings both ways, as a device with two uplinks would), with 5% of the
# acknowledged sends repeated. enrich is paused and resumed midway: ingest
# never stops. Then the processors drain and the host prints its summary.
#
# Usage: demo/live.sh BIN DATA_DIR MQTT_URL
set -euo pipefail
bin="$1"; data="$2"; mqtt="$3"
root="$(cd "$(dirname "$0")/.." && pwd)"
rm -rf "$data"; mkdir -p "$data"
config="$data/live.toml"
sed -e "s#../target/plugins/#$root/target/plugins/#" "$root/demo/tidewater.toml" > "$config"
cat >> "$config" <<TOML

[ingest.http]
listen = "127.0.0.1:0"

[[ingest.mqtt]]
url = "$mqtt"
client_id = "tidewater-demo-live-$$"
topics = { "devices/+/readings" = "sensor-readings" }
TOML
export TIDEWATER_DATA_DIR="$data"
TIDEWATER_LOG="${TIDEWATER_LOG:-warn}" "$bin" run --config "$config" --admin 127.0.0.1:0 > "$data/summary.txt" &
host=$!
trap 'kill $host 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do [ -f "$data/ingest.url" ] && [ -f "$data/admin.url" ] && break; sleep 0.1; done
echo "== host running: ingest $(cat "$data/ingest.url"), admin $(cat "$data/admin.url")"
echo "== 4 devices send the four data sets over HTTP and again over MQTT (5% of sends repeated)"
"$bin" simulate --devices 4 --batch 20 --retry-percent 5 --jitter 2ms --burst-percent 1 --out-of-order-percent 1 | sed 's/^/http: /' &
http=$!
"$bin" simulate --mqtt "$mqtt" --devices 4 --retry-percent 5 | sed 's/^/mqtt: /' &
mq=$!
sleep 3
echo "== pausing enrich while the devices keep sending"
"$bin" pause enrich
sleep 3
echo "== resuming enrich"
"$bin" resume enrich
wait $http; wait $mq
echo "== every device is done; waiting for the processors to drain"
python3 - "$(cat "$data/admin.url")" <<'PY'
import json, sys, time, urllib.request
url = sys.argv[1]
quiet = 0
while quiet < 10:
    ps = json.load(urllib.request.urlopen(url + "/v1/processors"))["processors"]
    quiet = quiet + 1 if all(p["lag"] == 0 for p in ps) else 0
    time.sleep(0.2)
PY
kill -TERM $host; wait $host || true
trap - EXIT
cat "$data/summary.txt"
"$bin" topics
echo "(enrich read every reading each time it arrived: over HTTP, over MQTT and the repeats; each distinct"
echo " (device, time) pair was processed once: its outputs are in readings-enriched, the rest are duplicates,"
echo " and the 4 readings the data sets hold twice with different values are conflicts in enrich.dlq)"
