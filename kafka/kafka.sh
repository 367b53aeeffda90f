#!/usr/bin/env bash
# A single-node Apache Kafka (KRaft: broker and controller in one JVM) on
# 127.0.0.1, for development and tests. Its jars come from Maven Central
# (kafka/pom.xml); its data, logs and address live under target/kafka/.
#
#   kafka/kafka.sh up      fetch the jars if needed, format, start, wait until it answers
#   kafka/kafka.sh down    stop it (and keep its data)
#   kafka/kafka.sh reset   stop it and remove its data
#   kafka/kafka.sh restart stop and start it again on the same port, keeping its data
#
# With KAFKA_DIR=<dir>, a second broker lives in <dir> instead.
#
# `up` prints the bootstrap address and writes it to target/kafka/bootstrap.
# The port is a free one chosen at the first `up` and kept afterwards.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
# KAFKA_DIR: where this broker keeps its config, data and logs (tests start
# brokers of their own this way); the jars are shared.
dir="${KAFKA_DIR:-$root/target/kafka}"
libs="$root/target/kafka/libs"
pidfile="$dir/broker.pid"
mkdir -p "$dir"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

fetch() {
  if [ ! -f "$libs/.complete" ]; then
    echo "kafka: fetching the broker's jars from Maven Central into $libs" >&2
    rm -rf "$libs"
    mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies \
      -DoutputDirectory="$libs" -DincludeScope=runtime >&2
    touch "$libs/.complete"
  fi
}

running() {
  [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

java_cmd() {
  java -Xms256m -Xmx768m -XX:+UseG1GC \
    -Dlog4j2.configurationFile="$here/log4j2.properties" \
    -Dkafka.logs.file="$dir/broker.log" \
    -cp "$libs/*" "$@"
}

configure() {
  if [ ! -f "$dir/ports" ]; then
    echo "$(free_port) $(free_port)" > "$dir/ports"
  fi
  read -r port cport < "$dir/ports"
  cat > "$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
group.initial.rebalance.delay.ms=0
log.retention.hours=-1
PROPS
  echo "127.0.0.1:$port" > "$dir/bootstrap"
}

up() {
  fetch
  configure
  if running; then
    cat "$dir/bootstrap"
    return 0
  fi
  if [ ! -f "$dir/data/meta.properties" ]; then
    java_cmd kafka.tools.StorageTool format -t "$(java_cmd kafka.tools.StorageTool random-uuid)" \
      -c "$dir/server.properties" >/dev/null
  fi
  : > "$dir/broker.log"
  nohup java -Xms256m -Xmx768m -XX:+UseG1GC \
    -Dlog4j2.configurationFile="$here/log4j2.properties" \
    -Dkafka.logs.file="$dir/broker.log" \
    -cp "$libs/*" kafka.Kafka "$dir/server.properties" > "$dir/broker.out" 2>&1 &
  echo $! > "$pidfile"
  for _ in $(seq 1 120); do
    if grep -q "Kafka Server started" "$dir/broker.log" 2>/dev/null; then
      cat "$dir/bootstrap"
      return 0
    fi
    if ! running; then
      echo "kafka: the broker exited; see $dir/broker.out and $dir/broker.log" >&2
      tail -20 "$dir/broker.out" >&2 || true
      exit 1
    fi
    sleep 0.5
  done
  echo "kafka: the broker did not start within 60 s; see $dir/broker.log" >&2
  exit 1
}

down() {
  if running; then
    pid="$(cat "$pidfile")"
    kill "$pid"
    for _ in $(seq 1 60); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  reset) down; rm -rf "$dir/data" "$dir/ports" "$dir/bootstrap" ;;
  restart) down; up ;;
  *) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
