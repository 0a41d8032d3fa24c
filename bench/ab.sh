#!/usr/bin/env bash
# Back-to-back comparison of server commands: each round starts every command in turn pinned to
# CPU 0, drives it with h2load from CPU 1 like EMQX (8 connections x 8 streams, EMQX's headers,
# 1 s warm-up, then 4 s), and prints req/s and the server's CPU per request (from /proc).
# Adjacent pairs are the steadiest comparison on a shared machine.
#
#   npx tsc -p bench/tsconfig.json
#   bench/ab.sh 5 publish "node dist/bench-build/bench/server.js native 0" "node dist/bench-build/bench/server.js floor 0"
#
# Each command must print "READY <port>" on stdout once listening (bench/server.js does).
set -euo pipefail
rounds=$1; rpc=$2; shift 2
case $rpc in
  publish) path=/emqx.exhook.v3.HookProvider/OnMessagePublish ;;
  authenticate) path=/emqx.exhook.v3.HookProvider/OnClientAuthenticate ;;
  *) echo "rpc must be publish or authenticate" >&2; exit 2 ;;
esac
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
node -e 'require(process.argv[1]).writeFrames(process.argv[2])' "$root/dist/bench-build/bench/run.js" "$work"
headers=(-H "content-type: application/grpc+proto" -H "te: trailers" -H "grpc-timeout: 5S" -H "user-agent: grpc-erlang/0.1.0")
for r in $(seq "$rounds"); do
  for cmd in "$@"; do
    # shellcheck disable=SC2086
    taskset -c 0 $cmd > "$work/out" 2>/dev/null &
    pid=$!
    for _ in $(seq 300); do grep -q READY "$work/out" && break; sleep 0.1; done
    port=$(awk '/READY/{print $2}' "$work/out")
    taskset -c 1 h2load -c 8 -m 8 -D 1 "${headers[@]}" -d "$work/$rpc.frame" "http://127.0.0.1:$port$path" > /dev/null
    c0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    out=$(taskset -c 1 h2load -c 8 -m 8 -D 4 "${headers[@]}" -d "$work/$rpc.frame" "http://127.0.0.1:$port$path")
    c1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    done_=$(echo "$out" | awk '/^requests:/{print $6}')
    failed=$(echo "$out" | awk '/^requests:/{print $10}')
    rps=$(echo "$out" | awk '/finished in/{print $4}')
    echo "round $r | $cmd | $rps req/s | $(echo "scale=1; ($c1 - $c0) * 10000 / $done_" | bc) µs CPU/req | failed $failed"
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done
