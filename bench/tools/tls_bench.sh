#!/usr/bin/env bash
# bench/tools/tls_bench.sh - latch beside nginx over TLS, one worker each,
# the same certificate (ECDSA P-256, then RSA 2048) and the same Mozilla
# "intermediate" settings:
#   new     a full handshake per request   (openssl s_time -new)
#   reuse   a resumed handshake per request (openssl s_time -reuse: TLS 1.3
#           session tickets)
#   keep    keep-alive requests over TLS    (wrk -t1 -c16)
# Each line gives what the client did (per wall second) and the server's
# own CPU time per connection or request (utime + stime of its process,
# from /proc), which does not depend on what else the machine runs; the
# ratio column is nginx's CPU per unit over latch's (above 1: latch is
# cheaper). Rounds alternate the servers.
#
# With CALLGRIND=1 instead: each server under valgrind --tool=callgrind,
# user-space instructions per connection of each mode (new, reuse) and per
# keep-alive request: a run that serves nothing is subtracted, so startup
# and shutdown cancel; no noise from the machine.
#
# With LATCH_B=path/to/another/latch (not with CALLGRIND): that build
# too, as "latchB", in the same rounds: before/after a change in one
# invocation, under the same load.
#
# Usage: bench/tools/tls_bench.sh [seconds per run, 5] [rounds, 2]
# Needs build/latch (make build), nginx, openssl and wrk (and valgrind).
set -euo pipefail
cd "$(dirname "$0")/../.."
T=${1:-5}
ROUNDS=${2:-2}
LATCH=${LATCH:-build/latch}
LATCH_B=${LATCH_B:-}
LPORT=18543
NPORT=18544
BPORT=18545
dir=$(mktemp -d /tmp/latch-tlsbench-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout "$dir/ec.key" -out "$dir/ec.crt" -days 2 -subj /CN=localhost \
  2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$dir/rsa.key" \
  -out "$dir/rsa.crt" -days 2 -subj /CN=localhost 2>/dev/null

ciphers="ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:\
ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:\
DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"

nginx_conf() { # cert key
  mkdir -p "$dir/ngx"
  cat >"$dir/ngx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
master_process off;
error_log $dir/ngx/error.log warn;
pid $dir/ngx/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/ngx/body;
    proxy_temp_path $dir/ngx/proxy;
    fastcgi_temp_path $dir/ngx/fcgi;
    uwsgi_temp_path $dir/ngx/uwsgi;
    scgi_temp_path $dir/ngx/scgi;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$NPORT ssl;
        ssl_certificate $1;
        ssl_certificate_key $2;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers $ciphers;
        ssl_prefer_server_ciphers off;
        ssl_ecdh_curve X25519:prime256v1:secp384r1;
        ssl_session_tickets on;
        location / { default_type text/plain; return 200 "Hello, World!"; }
    }
}
EOF
}

cpu_ticks() { # pid: utime + stime
  awk '{print $14 + $15}' "/proc/$1/stat"
}

wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "tls_bench: nothing listens on $1" >&2
  exit 1
}

hz=$(getconf CLK_TCK)

# run NAME PID PORT MODE: one measurement line
run() {
  local name=$1 pid=$2 port=$3 mode=$4 c0 c1 n out
  c0=$(cpu_ticks "$pid")
  if [ "$mode" = keep ]; then
    out=$(wrk -t1 -c16 -d"${T}s" "https://127.0.0.1:$port/hello" 2>&1)
    n=$(awk '/requests in/ {print $1}' <<<"$out")
  else
    out=$(openssl s_time -connect "127.0.0.1:$port" -www /hello "-$mode" \
      -time "$T" 2>&1)
    n=$(awk '/connections in [0-9]+ real seconds/ {print $1}' <<<"$out")
  fi
  c1=$(cpu_ticks "$pid")
  if [ -z "$n" ] || [ "$n" -eq 0 ]; then
    echo "tls_bench: $name $mode: no result" >&2
    echo "$out" >&2
    exit 1
  fi
  awk -v s="$name" -v m="$mode" -v n="$n" -v t="$T" -v c=$((c1 - c0)) \
    -v hz="$hz" 'BEGIN {
      printf "%-6s %-6s %9d in %ds  %9.0f/s  server CPU %7.1f us each\n",
        s, m, n, t, n / t, c / hz * 1e6 / n }'
}

# ---- CALLGRIND=1: instructions per unit ----

# start_cg NAME KIND: the server under callgrind, its pid in $cgpid
start_cg() {
  if [ "$1" = latch ]; then
    valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" \
      "$LATCH" -p $LPORT -w 1 --tls "$dir/$2.crt" "$dir/$2.key" \
      >"$dir/cg.log" 2>&1 &
    cgpid=$!
    wait_port $LPORT
  else
    nginx_conf "$dir/$2.crt" "$dir/$2.key"
    valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" \
      nginx -c "$dir/ngx/nginx.conf" -p "$dir/ngx" >"$dir/cg.log" 2>&1 &
    cgpid=$!
    wait_port $NPORT
  fi
  pids+=("$cgpid")
}

# stop_cg NAME: stops it; its total instruction count in $cg_total (not
# in a subshell: the wait must be the server's parent's)
stop_cg() {
  local sig
  sig=$([ "$1" = latch ] && echo INT || echo QUIT)
  # Again each second: a signal that came while the server was still
  # setting its handlers up under valgrind can be lost.
  for _ in $(seq 1 60); do
    kill -0 "$cgpid" 2>/dev/null || break
    kill "-$sig" "$cgpid" 2>/dev/null || true
    sleep 1
  done
  wait "$cgpid" 2>/dev/null || true
  cg_total=$(awk '/I *refs:/ {gsub(",", "", $NF); print $NF}' "$dir/cg.log")
  if [ -z "$cg_total" ]; then
    echo "tls_bench: no instruction count from callgrind" >&2
    cat "$dir/cg.log" >&2
    exit 1
  fi
}

# cg_unit NAME KIND MODE: instructions per connection (or request)
cg_unit() {
  local name=$1 kind=$2 mode=$3 port base total n out
  port=$([ "$name" = latch ] && echo $LPORT || echo $NPORT)
  start_cg "$name" "$kind"
  stop_cg "$name"
  base=$cg_total
  start_cg "$name" "$kind"
  if [ "$mode" = keep ]; then
    out=$(wrk -t1 -c4 -d"${T}s" "https://127.0.0.1:$port/hello" 2>&1)
    n=$(awk '/requests in/ {print $1}' <<<"$out")
  else
    out=$(openssl s_time -connect "127.0.0.1:$port" -www /hello "-$mode" \
      -time "$T" 2>&1)
    n=$(awk '/connections in [0-9]+ real seconds/ {print $1}' <<<"$out")
  fi
  stop_cg "$name"
  total=$cg_total
  awk -v s="$name" -v k="$kind" -v m="$mode" -v n="$n" -v b="$base" \
    -v t="$total" 'BEGIN {
      printf "%-6s %-4s %-6s %7d done  %10.0f instructions each\n",
        s, k, m, n, (t - b) / n }'
}

if [ "${CALLGRIND:-0}" = 1 ]; then
  for kind in ec rsa; do
    for mode in new reuse keep; do
      cg_unit latch $kind $mode
      cg_unit nginx $kind $mode
    done
  done
  exit 0
fi

for kind in ec rsa; do
  "$LATCH" -p $LPORT -w 1 --tls "$dir/$kind.crt" "$dir/$kind.key" \
    >"$dir/latch.log" 2>&1 &
  lpid=$!
  pids+=("$lpid")
  nginx_conf "$dir/$kind.crt" "$dir/$kind.key"
  nginx -c "$dir/ngx/nginx.conf" -p "$dir/ngx" >"$dir/ngx/out.log" 2>&1 &
  npid=$!
  pids+=("$npid")
  bpid=
  if [ -n "$LATCH_B" ]; then
    "$LATCH_B" -p $BPORT -w 1 --tls "$dir/$kind.crt" "$dir/$kind.key" \
      >"$dir/latchB.log" 2>&1 &
    bpid=$!
    pids+=("$bpid")
    wait_port $BPORT
  fi
  wait_port $LPORT
  wait_port $NPORT
  echo "# $kind certificate"
  for mode in new reuse keep; do
    for r in $(seq 1 "$ROUNDS"); do
      run latch "$lpid" $LPORT $mode
      [ -z "$bpid" ] || run latchB "$bpid" $BPORT $mode
      run nginx "$npid" $NPORT $mode
    done
  done
  kill "$lpid" "$npid" $bpid
  wait "$lpid" "$npid" $bpid 2>/dev/null || true
  pids=()
done
