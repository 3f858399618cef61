#!/usr/bin/env bash
# bench/sse.sh - SSE fan-out: latch (in-process hub, and through Redis)
# beside a Node SSE server (node:http + a Set of responses) in one run, on
# one worker / one process each, pinned to CPU $SERVER_CPU; the client
# (bench/tools/sseclients.c) on CPU $CLIENT_CPU.
#
# For each subscriber count in $SUBS:
#   burst   K events published as fast as the server can: deliveries/s
#           (N*K over first publish -> last event received), server CPU
#           per delivery (and Redis's, through Redis), memory per subscriber
#           (VmRSS after the N subscribed minus before, / N);
#   rate    $RATE events/s for $RATE_S seconds: publish -> client latency,
#           p50 and p99 of every delivery (CLOCK_MONOTONIC, one machine).
# Each line is the median of $ROUNDS rounds, after $WARMUP warm-up round(s)
# left out of it. Results: bench/results/
# sse-<UTC>.txt. Usage: bench/sse.sh   (SUBS="1000" ROUNDS=1 for a look)
set -euo pipefail
cd "$(dirname "$0")/.."

SUBS=${SUBS:-"1000 10000"}
DELIVERIES=${DELIVERIES:-500000} # per burst round: K = DELIVERIES / N
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-1} # rounds run first and left out of the medians
RATE=${RATE:-10}
RATE_S=${RATE_S:-3}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
SERVERS=${SERVERS:-"latch node latch-redis"}

log() { echo "sse: $*" >&2; }

hard=$(ulimit -Hn)
[ "$hard" = unlimited ] && hard=65536
ulimit -n $((hard < 65536 ? hard : 65536))

log "building latch (Release) in build-bench/"
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DLATCH_TESTS=OFF \
  >/dev/null
cmake --build build-bench -j "$(nproc)" --target latch_static >/dev/null
CFLAGS_TOOLS=(-O2 -Wall -Wextra -Wshadow -Wstrict-prototypes)
cc "${CFLAGS_TOOLS[@]}" -Iinclude bench/apps/sse_bench.c \
  build-bench/liblatch.a $(pkg-config --libs libuv jansson hiredis openssl) \
  -lpthread -lm -o build-bench/sse_bench
cc "${CFLAGS_TOOLS[@]}" bench/tools/sseclients.c -o build-bench/sseclients

work=$(mktemp -d)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start NAME: starts a server on CPU $SERVER_CPU; sets $port and $pid.
redis_pid=0
start() {
  local out="$work/$1.out"
  port=$(free_port)
  case "$1" in
    latch) taskset -c "$SERVER_CPU" build-bench/sse_bench -p "$port" -w 1 \
      >"$out" & ;;
    latch-redis)
      local rport
      rport=$(free_port)
      taskset -c "$SERVER_CPU" redis-server --port "$rport" --bind 127.0.0.1 \
        --save '' --appendonly no --loglevel warning >/dev/null &
      redis_pid=$!
      pids+=("$redis_pid")
      for _ in $(seq 100); do
        redis-cli -p "$rport" ping >/dev/null 2>&1 && break
        sleep 0.05
      done
      taskset -c "$SERVER_CPU" build-bench/sse_bench -p "$port" -w 1 \
        -r "redis://127.0.0.1:$rport" >"$out" & ;;
    node) PORT=$port taskset -c "$SERVER_CPU" node bench/node/sse.js >"$out" & ;;
  esac
  pid=$!
  pids+=("$pid")
  for _ in $(seq 200); do
    grep -q port "$out" 2>/dev/null && return 0
    sleep 0.05
  done
  log "$1 did not start"
  exit 1
}

stop() {
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  if [ "$redis_pid" != 0 ]; then
    kill "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
    redis_pid=0
  fi
}

mkdir -p bench/results
result=bench/results/sse-$(date -u +%Y%m%dT%H%M%SZ).txt
{
  echo "# bench/sse.sh $(date -u +%FT%TZ) on $(nproc) CPUs ($(uname -r))"
  echo "# SUBS=\"$SUBS\" DELIVERIES=$DELIVERIES ROUNDS=$ROUNDS WARMUP=$WARMUP RATE=$RATE RATE_S=$RATE_S"
  echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$result"
for n in $SUBS; do
  k=$((DELIVERIES / n))
  [ "$k" -lt 1 ] && k=1
  for s in $SERVERS; do
    log "$s: $n subscribers, burst of $k events"
    start "$s"
    taskset -c "$CLIENT_CPU" build-bench/sseclients -p "$port" -P "$pid" \
      -R "$redis_pid" -n "$n" -k "$k" -i "$ROUNDS" -w "$WARMUP" \
      -l "$s-burst" |
      tee -a "$result" | grep '^sse:' >&2 || true
    stop
    log "$s: $n subscribers, $RATE events/s for $RATE_S s"
    start "$s"
    taskset -c "$CLIENT_CPU" build-bench/sseclients -p "$port" -P "$pid" \
      -R "$redis_pid" -n "$n" -k $((RATE * RATE_S)) -r "$RATE" -i "$ROUNDS" \
      -w "$WARMUP" -l "$s-rate" | tee -a "$result" | grep '^sse:' >&2 || true
    stop
  done
done
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$result"
log "results in $result"
grep '^sse:' "$result"
