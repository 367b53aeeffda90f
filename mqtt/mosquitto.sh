#!/usr/bin/env bash
# A Mosquitto MQTT broker (Debian's package) on 127.0.0.1, for the tests,
# the benchmark and `make demo-live`. Its config, data and log live under
# target/mosquitto/ (or MOSQUITTO_DIR).
#
#   mqtt/mosquitto.sh up      install it with apt if missing, start it, wait until it answers
#   mqtt/mosquitto.sh down    stop it
#
# `up` prints the broker URL (mqtt://127.0.0.1:PORT) and writes it to
# target/mosquitto/url. The port is a free one chosen at the first `up`
# and kept afterwards.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
dir="${MOSQUITTO_DIR:-$root/target/mosquitto}"
pidfile="$dir/mosquitto.pid"
mkdir -p "$dir/data"

install() {
  command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] && return 0
  if [ "$(id -u)" = 0 ]; then
    apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q mosquitto >&2
  else
    echo "mosquitto: not installed; run: apt-get install mosquitto" >&2
    exit 1
  fi
}

bin() {
  command -v mosquitto 2>/dev/null || echo /usr/sbin/mosquitto
}

running() {
  [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

configure() {
  if [ ! -f "$dir/port" ]; then
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()' > "$dir/port"
  fi
  port="$(cat "$dir/port")"
  # max_queued_*: a persistent session's queue while its client is away.
  # Over these limits Mosquitto drops QoS 1 messages it has already
  # acknowledged to the publisher (eclipse-mosquitto/mosquitto#3687), so
  # they are set far above what the tests send.
  cat > "$dir/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
persistence true
persistence_location $dir/data/
autosave_interval 1
max_queued_messages 10000000
max_queued_bytes 0
max_inflight_messages 1000
log_dest file $dir/mosquitto.log
pid_file $pidfile
CONF
  echo "mqtt://127.0.0.1:$port" > "$dir/url"
}

up() {
  install
  configure
  if running; then
    cat "$dir/url"
    return 0
  fi
  # Root drops privileges to the mosquitto user: the data must be its.
  if [ "$(id -u)" = 0 ] && id mosquitto >/dev/null 2>&1; then chown -R mosquitto "$dir"; fi
  : > "$dir/mosquitto.log"
  "$(bin)" -d -c "$dir/mosquitto.conf"
  port="$(cat "$dir/port")"
  for _ in $(seq 1 100); do
    if python3 -c "import socket,sys; s=socket.socket(); s.settimeout(0.2); sys.exit(s.connect_ex(('127.0.0.1', $port)))" 2>/dev/null; then
      cat "$dir/url"
      return 0
    fi
    sleep 0.1
  done
  echo "mosquitto: did not start within 10 s; see $dir/mosquitto.log" >&2
  tail -20 "$dir/mosquitto.log" >&2 || true
  exit 1
}

down() {
  if running; then
    pid="$(cat "$pidfile")"
    kill "$pid"
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
