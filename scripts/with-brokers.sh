#!/usr/bin/env bash
# Runs a command with the three bridged engines reachable, for the bridge tests:
#   scripts/with-brokers.sh npx jest test/bridge-
# Exports EXHOOK_TEST_NATS_URL (NATS with JetStream), EXHOOK_TEST_AMQP_URL (RabbitMQ) and
# EXHOOK_TEST_REDIS_URL. An engine already listening on its standard port (4222, 5672, 6379 on
# 127.0.0.1) is reused: the tests use names unique to the run there and never stop it. Otherwise
# a throwaway one is started on a free local port from the Debian package (installed with apt-get
# when missing and running as root), and stopped and deleted when the command ends.
# EXHOOK_TEST_NATS_BIN / EXHOOK_TEST_REDIS_BIN name the nats-server / redis-server binaries the
# fault tests start their own instances of. An engine that cannot be had is reported loudly and
# its tests are skipped, visibly.
set -uo pipefail

if [ "$#" -eq 0 ]; then echo "usage: $0 <command> [args...]" >&2; exit 2; fi

say() { echo "with-brokers: $*" >&2; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
wait_port() { # port seconds
  local i
  for ((i = 0; i < $2 * 10; i++)); do listening "$1" && return 0; sleep 0.1; done
  return 1
}

DIR=$(mktemp -d /tmp/exhook-brokers.XXXXXX)
PIDS=()
RABBIT_NODE=""
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  if [ -n "$RABBIT_NODE" ]; then rabbitmqctl -n "$RABBIT_NODE" stop >/dev/null 2>&1 || true; fi
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$DIR"
}
trap cleanup EXIT INT TERM

MISSING=()
need() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || MISSING+=("$2"); }
need nats-server nats-server
need redis-server redis-server
if ! listening 5672; then need rabbitmq-server rabbitmq-server; fi
if [ "${#MISSING[@]}" -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  say "installing Debian packages: ${MISSING[*]}"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${MISSING[@]}" >/dev/null) || say "apt-get install ${MISSING[*]} failed"
fi
bin() { command -v "$1" 2>/dev/null || { [ -x "/usr/sbin/$1" ] && echo "/usr/sbin/$1"; }; }
NATS_BIN=$(bin nats-server)
REDIS_BIN=$(bin redis-server)
[ -n "$NATS_BIN" ] && export EXHOOK_TEST_NATS_BIN="$NATS_BIN"
[ -n "$REDIS_BIN" ] && export EXHOOK_TEST_REDIS_BIN="$REDIS_BIN"

# NATS with JetStream
if listening 4222; then
  export EXHOOK_TEST_NATS_URL="nats://127.0.0.1:4222"
elif [ -n "$NATS_BIN" ]; then
  PORT=$(free_port)
  mkdir -p "$DIR/nats"
  "$NATS_BIN" -a 127.0.0.1 -p "$PORT" -js -sd "$DIR/nats" >"$DIR/nats.log" 2>&1 &
  PIDS+=($!)
  if wait_port "$PORT" 10; then export EXHOOK_TEST_NATS_URL="nats://127.0.0.1:$PORT"; else cat "$DIR/nats.log" >&2; fi
fi

# Redis
if listening 6379; then
  export EXHOOK_TEST_REDIS_URL="redis://127.0.0.1:6379"
elif [ -n "$REDIS_BIN" ]; then
  PORT=$(free_port)
  "$REDIS_BIN" --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$DIR" >"$DIR/redis.log" 2>&1 &
  PIDS+=($!)
  if wait_port "$PORT" 10; then export EXHOOK_TEST_REDIS_URL="redis://127.0.0.1:$PORT"; else cat "$DIR/redis.log" >&2; fi
fi

# RabbitMQ (a throwaway node takes ~5-10 s to start)
if listening 5672; then
  export EXHOOK_TEST_AMQP_URL="amqp://guest:guest@127.0.0.1:5672"
elif [ -n "$(bin rabbitmq-server)" ]; then
  PORT=$(free_port)
  RABBIT_NODE="exhook-test-$$@localhost"
  mkdir -p "$DIR/rabbit"
  : >"$DIR/rabbit/enabled_plugins"
  RABBITMQ_NODENAME="$RABBIT_NODE" RABBITMQ_NODE_PORT="$PORT" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_DIST_PORT=$((PORT + 20000 > 65000 ? PORT - 20000 : PORT + 20000)) \
    RABBITMQ_MNESIA_BASE="$DIR/rabbit" RABBITMQ_LOG_BASE="$DIR/rabbit" RABBITMQ_ENABLED_PLUGINS_FILE="$DIR/rabbit/enabled_plugins" \
    RABBITMQ_PID_FILE="$DIR/rabbit/pid" rabbitmq-server >"$DIR/rabbit.log" 2>&1 &
  PIDS+=($!)
  if wait_port "$PORT" 60; then export EXHOOK_TEST_AMQP_URL="amqp://guest:guest@127.0.0.1:$PORT"; else tail -20 "$DIR/rabbit.log" >&2; RABBIT_NODE=""; fi
fi

for v in EXHOOK_TEST_NATS_URL EXHOOK_TEST_AMQP_URL EXHOOK_TEST_REDIS_URL; do
  if [ -n "${!v:-}" ]; then say "$v=${!v}"; else say "*** $v not available: those bridge tests will be SKIPPED ***"; fi
done
"$@"
