#!/usr/bin/env bash
# bench/proxy.sh - reverse proxies side by side (issue 14): latch
# (bench/apps/proxy_bench.c: latch_use_proxy on "/", 64 idle upstream
# connections kept), nginx (proxy_pass to an upstream block with
# `keepalive 64`, proxy_http_version 1.1, Connection ""), Node's http-proxy
# (keep-alive agent, 64 idle sockets) and Fastify 5 with @fastify/http-proxy
# (bench/node/proxy.js), all in front of the same upstream: latch_bench's
# GET /plaintext (bench/apps/latch_bench.c, one worker). Two more latch rows
# when named in SERVERS: latch-serial (LATCH_LIMIT_PIPELINE 1: a client
# connection's pipelined requests read one at a time, as nginx does) and
# latch-pool1k (1024 idle upstream connections kept). latch dispatches up
# to 64 pipelined requests of a connection at once, but a proxied one goes
# upstream only once the response before it ended, on the connection that
# one gave back: a client connection holds one upstream connection at a
# time, as with nginx.
#
# One worker (process) each, the proxy pinned to PROXY_CPU, the upstream to
# UPSTREAM_CPU, wrk (-t1, CONNS connections) to CLIENT_CPU; on a 2-core
# machine the upstream shares the client's CPU (the defaults), so read the
# proxy's CPU per request beside req/s: a row where the client side is the
# bottleneck shows it in CPU-us/req, not in req/s. Plain keep-alive and
# PIPELINE-deep pipelined (bench/pipeline.lua). Prints requests/s, the
# proxy's and the upstream's CPU seconds (from /proc/PID/stat), the proxy's
# CPU microseconds per request, and latch's ratio to each row (req/s and
# CPU per request).
#
# Then the memory of idle pooled upstream connections (bench/tools/poolconns,
# fresh proxies each time): N client connections that made one request
# each, sequentially (one upstream connection, reused) and concurrently (N
# upstream connections, all pooled afterwards). RSS grows by the same in
# both concurrent runs of latch, pooled or not (-m -1: every upstream
# connection closed after its answer): the allocator's high-water mark of N
# requests in flight. So latch's per-connection figure is taken from its
# heap in use (proxy_bench -M), pooled minus not pooled, / N; nginx's
# RSS rows are printed beside for what they are.
#
# Figures are printed, never asserted. Report `uptime` beside them: other
# processes on the machine disturb throughput (not the memory figures).
#
#   bench/proxy.sh                                  all, DURATION=10 s
#   SERVERS="latch nginx" DURATION=5 bench/proxy.sh
#   IDLE=0 bench/proxy.sh                           no memory measure
#   LATCH_B=/tmp/base/build-bench/proxy_bench bench/proxy.sh
#       another build's proxy_bench too, as "latchB" (same options as the
#       latch row), in the same run: before/after a change under one load
#
# Needs: nginx, node + bench/node/node_modules (npm ci in bench/node; run
# here when missing), wrk, taskset, curl, cc, cmake.
set -euo pipefail

cd "$(dirname "$0")/.."
. bench/lib.sh
LATCH_B=${LATCH_B:-}
SERVERS=${SERVERS:-latch ${LATCH_B:+latchB }latch-serial latch-pool1k nginx http-proxy fastify-proxy}
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
PIPELINE=${PIPELINE:-16}
PROXY_CPU=${PROXY_CPU:-0}
UPSTREAM_CPU=${UPSTREAM_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-1}
BASE_PORT=${BASE_PORT:-18380}
IDLE=${IDLE:-1}
IDLE_CONNS=${IDLE_CONNS:-1000}

die() { echo "proxy.sh: $*" >&2; exit 1; }
for t in wrk nginx node taskset curl cc cmake; do
  command -v "$t" >/dev/null || die "$t missing (scripts/deps.sh bench)"
done
hard=$(ulimit -Hn)
[ "$hard" = unlimited ] && hard=65536
ulimit -n $((hard < 65536 ? hard : 65536))

echo "proxy.sh: building latch (Release) in build-bench/" >&2
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DLATCH_TESTS=OFF \
  >/dev/null
cmake --build build-bench -j "$(nproc)" --target latch_static >/dev/null
flags=(-O2 -Wall -Wextra -Wshadow -Wstrict-prototypes)
read -r -a pc <<<"$(pkg-config --libs libuv jansson hiredis openssl)"
libs=(build-bench/liblatch.a "${pc[@]}" -lpthread -lm)
cc "${flags[@]}" -Iinclude bench/apps/latch_bench.c "${libs[@]}" \
  -o build-bench/latch_bench
cc "${flags[@]}" -Iinclude bench/apps/proxy_bench.c "${libs[@]}" \
  -o build-bench/proxy_bench
cc "${flags[@]}" bench/tools/poolconns.c -o build-bench/poolconns
if [[ " $SERVERS " == *" http-proxy "* || " $SERVERS " == *" fastify-proxy "* ]] &&
  { [ ! -d bench/node/node_modules/http-proxy ] ||
    [ ! -d bench/node/node_modules/@fastify/http-proxy ]; }; then
  (cd bench/node && npm ci --no-audit --no-fund --loglevel=error) ||
    die "npm ci in bench/node failed"
fi

work=$(mktemp -d /tmp/latch-proxy-bench.XXXXXX)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# nginx.conf for a proxy on PORT to UPSTREAM keeping KEEP idle connections.
nginx_conf() { # port upstream_port keep
  cat <<CONF
worker_processes 1;
daemon off;
pid $work/nginx-$1.pid;
error_log $work/nginx-$1.err;
worker_rlimit_nofile 65536;
events { worker_connections 16384; }
http {
  access_log off;
  keepalive_timeout 120s;
  keepalive_requests 100000000;
  upstream backend {
    server 127.0.0.1:$2;
    keepalive $3;
    keepalive_requests 100000000;
    keepalive_timeout 120s;
  }
  server {
    listen 127.0.0.1:$1;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
CONF
}

# start NAME PORT UPSTREAM_PORT [KEEP]: a proxy; sets SPID (the process
# that serves: nginx's worker) and MPID (the one started).
start() {
  local name=$1 p=$2 up=$3 keep=${4:-64}
  case $name in
    latch) taskset -c "$PROXY_CPU" build-bench/proxy_bench -p "$p" -M \
      -u "http://127.0.0.1:$up" -m "$keep" >"$work/$name.log" 2>&1 & ;;
    latchB) [ -x "$LATCH_B" ] || die "LATCH_B ($LATCH_B) is not an executable"
      taskset -c "$PROXY_CPU" "$LATCH_B" -p "$p" \
      -u "http://127.0.0.1:$up" -m "$keep" >"$work/$name.log" 2>&1 & ;;
    latch-serial) taskset -c "$PROXY_CPU" build-bench/proxy_bench -p "$p" \
      -u "http://127.0.0.1:$up" -m "$keep" -P 1 >"$work/$name.log" 2>&1 & ;;
    latch-pool1k) taskset -c "$PROXY_CPU" build-bench/proxy_bench -p "$p" \
      -u "http://127.0.0.1:$up" -m 1024 >"$work/$name.log" 2>&1 & ;;
    nginx) nginx_conf "$p" "$up" "$keep" >"$work/nginx-$p.conf"
      taskset -c "$PROXY_CPU" nginx -p "$work" -e "$work/nginx-$p.err" \
        -c "$work/nginx-$p.conf" >"$work/$name.log" 2>&1 & ;;
    http-proxy | fastify-proxy) taskset -c "$PROXY_CPU" node \
      bench/node/proxy.js "$name" "$p" "http://127.0.0.1:$up" \
      >"$work/$name.log" 2>&1 & ;;
    *) die "unknown server $name" ;;
  esac
  MPID=$!
  pids+=("$MPID")
  SPID=$MPID
  if [ "$name" = nginx ]; then
    for _ in $(seq 100); do
      SPID=$(pgrep -P "$MPID" | head -1 || true)
      [ -n "$SPID" ] && break
      sleep 0.1
    done
    [ -n "$SPID" ] || die "nginx started no worker: $(cat "$work/nginx-$p.err")"
  fi
}

# answers PORT: waits (bounded) until the proxy answers /plaintext right.
answers() {
  local b
  for _ in $(seq 100); do
    b=$(curl -s --max-time 2 "http://127.0.0.1:$1/plaintext" || true)
    [ "$b" = "Hello, World!" ] && return 0
    sleep 0.1
  done
  return 1
}

stop() { # MPID
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

up=$((BASE_PORT))
taskset -c "$UPSTREAM_CPU" build-bench/latch_bench -p "$up" -w 1 \
  >"$work/upstream.log" 2>&1 &
upid=$!
pids+=("$upid")

echo "load: $(uptime)"
echo "proxy CPU $PROXY_CPU, upstream CPU $UPSTREAM_CPU, wrk CPU $CLIENT_CPU;" \
  "-c$CONNS, ${DURATION}s per row"
printf '%-14s %-8s %10s %9s %9s %11s %8s %8s %s\n' proxy load req/s \
  proxy-cpu up-cpu proxy-us/req x-req/s x-cpu errors
declare -A rps cpr
port=$((BASE_PORT + 1))
for s in $SERVERS; do
  port=$((port + 1))
  start "$s" "$port" "$up"
  answers "$port" || die "$s does not answer on $port: $(tail -3 "$work/$s.log")"
  for mode in plain "pipe$PIPELINE"; do
    args=(-t1 -c"$CONNS" --timeout 10s)
    tail=()
    if [ "$mode" != plain ]; then
      args+=(-s bench/pipeline.lua)
      tail=(-- "$PIPELINE")
    fi
    # warm up (JIT, pools), then measure
    taskset -c "$CLIENT_CPU" wrk "${args[@]}" -d1s \
      "http://127.0.0.1:$port/plaintext" "${tail[@]}" >/dev/null 2>&1 || true
    c0=$(cpu_of "$SPID")
    u0=$(cpu_of "$upid")
    out=$(taskset -c "$CLIENT_CPU" wrk "${args[@]}" -d"${DURATION}s" \
      "http://127.0.0.1:$port/plaintext" "${tail[@]}")
    c1=$(cpu_of "$SPID")
    u1=$(cpu_of "$upid")
    reqs=$(awk '/requests in/ { print $1 }' <<<"$out")
    errs=$(awk '/Non-2xx|Socket errors/ { sub(/^ +/, ""); printf "%s; ", $0 }' \
      <<<"$out")
    rps[$s.$mode]=$(awk -v n="$reqs" -v d="$DURATION" 'BEGIN { printf "%.0f", n / d }')
    cpr[$s.$mode]=$(awk -v n="$reqs" -v a="$c0" -v b="$c1" \
      'BEGIN { printf "%.2f", (n > 0 ? (b - a) * 1e6 / n : 0) }')
    l=${rps[latch.$mode]:-}
    lc=${cpr[latch.$mode]:-}
    awk -v s="$s" -v m="$mode" -v r="${rps[$s.$mode]}" -v c0="$c0" -v c1="$c1" \
      -v u0="$u0" -v u1="$u1" -v us="${cpr[$s.$mode]}" -v l="$l" -v lc="$lc" \
      -v e="${errs:--}" 'BEGIN {
        xr = (l != "" && r > 0) ? sprintf("%.2f", l / r) : "-";
        xc = (lc != "" && lc > 0) ? sprintf("%.2f", us / lc) : "-";
        printf "%-14s %-8s %10.0f %9.2f %9.2f %11.2f %8s %8s %s\n", s, m, r,
          c1 - c0, u1 - u0, us, xr, xc, e }'
  done
  stop "$MPID"
done
echo "x-req/s: latch's req/s / the row's; x-cpu: the row's proxy CPU per" \
  "request / latch's (above 1: latch spends less)"

[ "$IDLE" = 1 ] || exit 0

# Idle pooled upstream connections: fresh proxy per run, poolconns as
# both the client and the upstream (UPORT), pool limit above IDLE_CONNS.
# RSS keeps the allocator's high-water mark: N requests in flight at once
# leave it up whether or not their upstream connections stay pooled, so
# latch's figure is its heap in use (proxy_bench -M, read at the same
# moment as the RSS), pooled against not pooled; nginx's is RSS only.
echo
echo "idle pooled upstream connections, $IDLE_CONNS client connections each run:"
printf '%-8s %-22s %10s %9s %9s %11s %11s\n' proxy run up-conns rss0-kB \
  rss1-kB rss-B/conn heap-B
port=$((BASE_PORT + 20))
declare -A heap
for s in latch nginx; do
  [[ " $SERVERS " == *" $s "* ]] || continue
  runs=("sequential:$((IDLE_CONNS * 2))" "concurrent:$((IDLE_CONNS * 2))")
  [ "$s" = latch ] && runs+=("concurrent:-1")
  for run in "${runs[@]}"; do
    mode=${run%%:*}
    keep=${run#*:}
    port=$((port + 2))
    start "$s" "$port" "$((port + 1))" "$keep"
    for _ in $(seq 50); do
      ss -Hltn "sport = :$port" | grep -q . && break
      sleep 0.1
    done
    sleep 0.3 # the worker's own startup allocations
    flag=()
    [ "$mode" = concurrent ] && flag=(-c)
    [ "$s" = latch ] && flag+=(-K)
    if out=$(build-bench/poolconns -p "$port" -P "$SPID" -U "$((port + 1))" \
      -n "$IDLE_CONNS" "${flag[@]}"); then
      label="$mode, pool $keep"
      [ "$keep" = -1 ] && label="$mode, no pool"
      h=$(sed -n 's/^proxy_bench: heap_in_use=//p' "$work/$s.log" | tail -1)
      heap[$run]=${h:-}
      awk -v s="$s" -v l="$label" -v h="${h:--}" '{
          for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
          printf "%-8s %-22s %10s %9s %9s %11s %11s\n", s, l,
            v["upstream_conns"] "/" v["upstream_open"],
            v["rss_before_kb"], v["rss_after_kb"], v["bytes_per_conn"], h }' \
        <<<"$out"
    else
      echo "$s $mode: poolconns failed" >&2
    fi
    stop "$MPID"
  done
done
echo "(up-conns: upstream connections opened / still open at the end;" \
  "rss-B/conn: RSS growth / client connections; heap-B: latch's heap in use)"
a=${heap[concurrent:$((IDLE_CONNS * 2))]:-}
b=${heap[concurrent:-1]:-}
if [ -n "$a" ] && [ -n "$b" ]; then
  awk -v a="$a" -v b="$b" -v n="$IDLE_CONNS" 'BEGIN {
    printf "latch, heap per idle pooled upstream connection: %.0f bytes\n",
      (a - b) / n }'
fi
