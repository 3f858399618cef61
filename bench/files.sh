#!/usr/bin/env bash
# bench/files.sh - static files side by side (issue 13): a 1 KiB and a 1 MiB
# file over keep-alive, from latch (`latch serve`, sendfile on plain
# sockets), nginx (sendfile on, tcp_nopush, open_file_cache off), node:http
# with fs.createReadStream + stream.pipeline, and Fastify 5 with
# @fastify/static. One worker (process) each, pinned to SERVER_CPU; wrk on
# CLIENT_CPU. Prints requests/s, the server's CPU seconds, and bytes sent
# per server CPU-second (body bytes; the fair figure when wrk is the
# bottleneck). Figures are reported, never asserted.
#
#   bench/files.sh                      all servers, DURATION=10 s each
#   SERVERS="latch nginx" DURATION=3 bench/files.sh
#   LATCH_B=/tmp/latch-main SERVERS="latch-b latch nginx" bench/files.sh
#                                       a second latch build (latch-b) in
#                                       the same run: before/after a change
#
# Needs: build/latch (make build), nginx, node + bench/node/node_modules
# (npm ci in bench/node; the script runs it when missing), wrk, taskset.
set -euo pipefail

cd "$(dirname "$0")/.."
. bench/lib.sh
SERVERS=${SERVERS:-latch nginx node-stream fastify-static}
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
BASE_PORT=${BASE_PORT:-18480}
LATCH_BIN=${LATCH_BIN:-build/latch}

die() { echo "files.sh: $*" >&2; exit 1; }
[ -x "$LATCH_BIN" ] || die "$LATCH_BIN missing: make build first"
for t in wrk nginx node taskset curl; do
  command -v "$t" >/dev/null || die "$t missing (scripts/deps.sh bench)"
done
if [[ " $SERVERS " == *" fastify-static "* ]] &&
  [ ! -d bench/node/node_modules/@fastify/static ]; then
  (cd bench/node && npm ci --no-audit --no-fund >/dev/null) ||
    die "npm ci in bench/node failed"
fi

work=$(mktemp -d /tmp/latch-files-bench.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/www" "$work/nginx"
head -c 1024 /dev/urandom >"$work/www/1k.bin"
head -c $((1024 * 1024)) /dev/urandom >"$work/www/1m.bin"
chmod 644 "$work/www/"*

nginx_static_conf "$work" 4096 >"$work/nginx/nginx.conf"

start() { # name port -> sets SPID (the process serving)
  local name=$1 p=$2
  case $name in
    latch) taskset -c "$SERVER_CPU" "$LATCH_BIN" serve "$work/www" \
      --port "$p" --workers 1 >"$work/$name.log" 2>&1 & ;;
    latch-b) [ -x "${LATCH_B:-}" ] || die "latch-b needs LATCH_B=binary"
      taskset -c "$SERVER_CPU" "$LATCH_B" serve "$work/www" \
      --port "$p" --workers 1 >"$work/$name.log" 2>&1 & ;;
    nginx) sed "s/PORT/$p/" "$work/nginx/nginx.conf" >"$work/nginx/$p.conf"
      taskset -c "$SERVER_CPU" nginx -p "$work/nginx" \
        -e "$work/nginx/error.log" -c "$work/nginx/$p.conf" \
        >"$work/$name.log" 2>&1 & ;;
    node-stream) taskset -c "$SERVER_CPU" node bench/node/files.js stream \
      "$p" "$work/www" >"$work/$name.log" 2>&1 & ;;
    fastify-static) taskset -c "$SERVER_CPU" node bench/node/files.js \
      fastify "$p" "$work/www" >"$work/$name.log" 2>&1 & ;;
    *) die "unknown server $name" ;;
  esac
  pids+=($!)
  SPID=$!
  for _ in $(seq 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$p/1k.bin" && break
    sleep 0.1
  done
  curl -sf -o /dev/null "http://127.0.0.1:$p/1k.bin" ||
    die "$name did not answer on $p: $(tail -3 "$work/$name.log")"
  # nginx serves from its worker, the master's only child
  if [ "$name" = nginx ]; then SPID=$(pgrep -P "$SPID" | head -1); fi
  # check the bytes once per size
  for f in 1k.bin 1m.bin; do
    curl -sf "http://127.0.0.1:$p/$f" | cmp -s - "$work/www/$f" ||
      die "$name sent other bytes for $f"
  done
}

printf '%-15s %-5s %12s %10s %9s %14s\n' server file req/s MB/s srv-cpu-s \
  "MB/srv-cpu-s"
port=$BASE_PORT
for s in $SERVERS; do
  port=$((port + 1))
  start "$s" "$port"
  for f in 1k.bin 1m.bin; do
    size=$(stat -c %s "$work/www/$f")
    # warm (page cache, JIT), then measure
    taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d1s \
      "http://127.0.0.1:$port/$f" >/dev/null 2>&1 || true
    c0=$(cpu_of "$SPID")
    out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" \
      "http://127.0.0.1:$port/$f")
    c1=$(cpu_of "$SPID")
    reqs=$(awk '/requests in/ { print $1 }' <<<"$out")
    errs=$(awk '/Non-2xx|Socket errors/' <<<"$out")
    [ -z "$errs" ] || echo "  $s $f: $errs" >&2
    awk -v n="$reqs" -v d="$DURATION" -v sz="$size" -v c0="$c0" -v c1="$c1" \
      -v s="$s" -v f="$f" 'BEGIN { cpu = c1 - c0; mb = n * sz / 1048576;
        printf "%-15s %-5s %12.0f %10.1f %9.2f %14.1f\n", s, f, n / d,
          mb / d, cpu, (cpu > 0 ? mb / cpu : 0) }'
  done
  kill "$SPID" 2>/dev/null || true
  [ "$s" = nginx ] && kill "${pids[-1]}" 2>/dev/null || true
  wait "${pids[-1]}" 2>/dev/null || true
done
