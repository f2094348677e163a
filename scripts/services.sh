#!/usr/bin/env bash
# Start, or confirm, the local services the platform talks to: InfluxDB, Redis, RabbitMQ.
# Every server binds to loopback. InfluxDB keeps its data under .ionbeam/influxdb; Redis and
# RabbitMQ are the machine's own when they answer, started with the machine's standard
# commands when they do not, and installed from Debian's packages when they are missing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${IONBEAM_STATE_DIR:-$ROOT/.ionbeam}"
LOGS="$STATE/logs"
mkdir -p "$LOGS"

say() { printf 'services: %s\n' "$*"; }

port_open() {  # host port
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && exec 3>&- 3<&-
}

wait_for() {  # description seconds command...
  local what="$1" seconds="$2"; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@"; do
    if ((SECONDS >= deadline)); then say "$what did not come up within ${seconds}s"; return 1; fi
    sleep 0.2
  done
}

APT_UPDATED=0
apt_install() {
  if ((APT_UPDATED == 0)); then apt-get update -qq; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

influx_ping() { curl -fsS -o /dev/null "http://127.0.0.1:8086/ping" 2>/dev/null; }

start_influxdb() {
  if influx_ping 2>/dev/null; then say "InfluxDB answers on 127.0.0.1:8086"; return; fi
  if ! command -v influxd >/dev/null; then say "installing InfluxDB (Debian package influxdb)"; apt_install influxdb; fi
  local dir="$STATE/influxdb"
  mkdir -p "$dir/meta" "$dir/data" "$dir/wal"
  cat >"$dir/influxdb.conf" <<CONF
reporting-disabled = true
bind-address = "127.0.0.1:8088"
[meta]
  dir = "$dir/meta"
[data]
  dir = "$dir/data"
  wal-dir = "$dir/wal"
  query-log-enabled = false
[monitor]
  store-enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:8086"
  log-enabled = false
  max-body-size = 25000000
[continuous_queries]
  enabled = false
CONF
  nohup influxd -config "$dir/influxdb.conf" >"$LOGS/influxd.log" 2>&1 &
  wait_for "InfluxDB" 30 influx_ping
  say "InfluxDB started on 127.0.0.1:8086 (data in $dir)"
}

start_redis() {
  if port_open 127.0.0.1 6379; then say "Redis answers on 127.0.0.1:6379"; return; fi
  if ! command -v redis-server >/dev/null; then say "installing Redis"; apt_install redis-server; fi
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for "Redis" 20 port_open 127.0.0.1 6379
  say "Redis started on 127.0.0.1:6379"
}

start_rabbitmq() {
  if port_open 127.0.0.1 5672; then say "RabbitMQ answers on 127.0.0.1:5672"; return; fi
  if ! command -v rabbitmq-server >/dev/null; then say "installing RabbitMQ"; apt_install rabbitmq-server; fi
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 ERL_EPMD_ADDRESS=127.0.0.1
  rabbitmq-server -detached >>"$LOGS/rabbitmq.log" 2>&1 || true
  wait_for "RabbitMQ" 90 port_open 127.0.0.1 5672
  say "RabbitMQ started on 127.0.0.1:5672"
}

start_mosquitto() {
  # The Netatmo source's tests also use the machine's MQTT broker on its standard port.
  if port_open 127.0.0.1 1883; then say "Mosquitto answers on 127.0.0.1:1883"; return; fi
  if ! command -v mosquitto >/dev/null; then say "installing Mosquitto"; apt_install mosquitto; fi
  local conf="$STATE/mosquitto.conf"
  printf 'listener 1883 127.0.0.1\nallow_anonymous true\npersistence false\n' >"$conf"
  mosquitto -d -c "$conf"
  wait_for "Mosquitto" 20 port_open 127.0.0.1 1883
  say "Mosquitto started on 127.0.0.1:1883"
}

start_influxdb
start_redis
start_rabbitmq
start_mosquitto
