#!/usr/bin/env bash
# bench/run.sh - latch against nginx on the same machine, in one run.
#
# Both servers run single-worker on 127.0.0.1, pinned to CPU 0; wrk runs
# pinned to CPU 1. Scenarios: /hello plain and 16-deep pipelined, 64
# connections. Servers alternate for ROUNDS rounds; the table shows each
# server's median requests/s and the ratio latch/nginx. Every load is
# bounded by DURATION; the servers are stopped by pid on exit, also on
# failure. Results go to bench/results/<date>.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
LATCH_PORT=${LATCH_PORT:-18080}
NGINX_PORT=${NGINX_PORT:-18081}

cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DLATCH_TESTS=OFF >/dev/null
cmake --build build-bench -j "$(nproc)" --target latch >/dev/null

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / { default_type text/plain; return 200 "Hello, World!"; }
  }
}
CONF
cat >"$work/pipeline.lua" <<'LUA'
init = function(args)
  local r = {}
  for i = 1, 16 do r[i] = wrk.format(nil, wrk.path) end
  req = table.concat(r)
end
request = function() return req end
LUA

taskset -c "$SERVER_CPU" nginx -c "$work/nginx.conf" -p "$work" &
pids+=($!)
taskset -c "$SERVER_CPU" build-bench/latch -p "$LATCH_PORT" -w 1 >/dev/null &
pids+=($!)

wait_port() {
  for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$1/hello" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "bench: server on port $1 did not start" >&2
  return 1
}
wait_port "$NGINX_PORT"
wait_port "$LATCH_PORT"

# rps SERVER_PORT [lua]
rps() {
  local args=(-t1 -c"$CONNS" -d"${DURATION}s" --timeout 5s)
  [ -n "${2:-}" ] && args+=(-s "$2")
  taskset -c "$CLIENT_CPU" wrk "${args[@]}" "http://127.0.0.1:$1/hello" |
    awk '/Requests\/sec/ {print $2}'
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

out="bench/results/$(date -u +%Y%m%dT%H%M%SZ).txt"
{
  echo "# latch vs nginx, $(date -u)"
  echo "# $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
  echo "# nginx $(nginx -v 2>&1 | cut -d/ -f2), wrk -t1 -c$CONNS -d${DURATION}s, $ROUNDS rounds"
  printf '%-22s %12s %12s %8s\n' scenario latch nginx ratio
} | tee "$out"

for scen in plain pipelined; do
  lua=""
  [ "$scen" = pipelined ] && lua="$work/pipeline.lua"
  : >"$work/latch.$scen"
  : >"$work/nginx.$scen"
  for _ in $(seq 1 "$ROUNDS"); do
    rps "$LATCH_PORT" "$lua" >>"$work/latch.$scen"
    rps "$NGINX_PORT" "$lua" >>"$work/nginx.$scen"
  done
  l=$(median <"$work/latch.$scen")
  n=$(median <"$work/nginx.$scen")
  awk -v s="hello $scen" -v l="$l" -v n="$n" \
    'BEGIN { printf "%-22s %12.0f %12.0f %7.2fx\n", s, l, n, l / n }' |
    tee -a "$out"
done
echo "results: $out"
