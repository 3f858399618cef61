#!/usr/bin/env bash
# bench/run.sh - latch against the servers its users would pick instead, on
# this machine, in one run (`make bench`).
#
# Servers, each single-process / single-worker on its own 127.0.0.1 port,
# pinned to CPU $SERVER_CPU: latch (bench/apps/latch_bench.c, release build),
# nginx (return 200), h2o (static files: h2o 2.2 has no fixed-body handler
# without mruby), node:http, Express 5, Fastify 5 (bench/node/). All answer
# GET /plaintext ("Hello, World!", text/plain) and GET /json
# ({"message":"Hello, World!"}, serialized per request where the server
# runs code). latch, latch-core, Express and Fastify also answer GET /app:
# the same JSON through two middlewares and a route (latch-core: the same
# bytes from one catch-all handler, latch_bench -c), the framework's cost.
#
# 1. Measures that do not depend on machine noise, on fresh servers:
#    - resident memory per idle keep-alive connection (bench/tools/idleconns:
#      VmRSS before and after $IDLE_CONNS connections that made one request);
#    - instructions per request of the latch process (and of nginx, for
#      reference; and /app of latch against latch-core) under callgrind with a fixed, sequential client
#      (bench/tools/fixedclient): a run with $FIXED_REQUESTS more requests
#      than a base run (one batch per connection), difference /
#      $FIXED_REQUESTS, so startup, connection setup, first-use
#      initialization and shutdown cancel out.
# 2. Load: wrk pinned to CPU $CLIENT_CPU, $CONNS connections, scenarios
#    plaintext, json and app (only the servers that serve /app), each plain
#    and $PIPELINE-deep pipelined
#    (bench/pipeline.lua). Per scenario the servers take turns, $ROUNDS
#    rounds of $DURATION s (after one unrecorded warm-up of $WARMUP s each);
#    the table shows each server's median requests/s, median p99 latency,
#    the CPU used by the server and by wrk, the CPU taken by anything else
#    (noise), requests per CPU-second of the server, the ratio latch/server
#    and the errors wrk saw (socket errors + non-2xx). See bench/README.md.
#
# Results (table, machine, versions, raw numbers) go to
# bench/results/<UTC timestamp>.txt; the change per row against the previous
# result file (or COMPARE=<file>) is printed after the table.
#
# Every load has a fixed duration and wrk a --timeout; every server is
# checked to answer correctly (bounded retry) before it is loaded; every
# process started here is stopped by pid on exit, also on failure or ^C.
#
# Environment (defaults in brackets): ROUNDS [3], DURATION [10] seconds,
# WARMUP [2] seconds (0: none), CONNS [64], PIPELINE [16], SERVERS [latch
# latch-core nginx h2o node express fastify], MEASURES [1] (0: skip the callgrind and
# idle-connection measures), LOAD [1] (0: skip the load), FIXED_REQUESTS
# [20000], FIXED_CONNS [10], IDLE_CONNS [10000], SERVER_CPU [0],
# CLIENT_CPU [1], BASE_PORT [18080], COMPARE [newest earlier result].
# Quick run: ROUNDS=1 DURATION=2 WARMUP=0 make bench
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNS=${CONNS:-64}
PIPELINE=${PIPELINE:-16}
SERVERS=${SERVERS:-latch latch-core nginx h2o node express fastify}
MEASURES=${MEASURES:-1}
LOAD=${LOAD:-1}
FIXED_REQUESTS=${FIXED_REQUESTS:-20000}
FIXED_CONNS=${FIXED_CONNS:-10}
IDLE_CONNS=${IDLE_CONNS:-10000}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
BASE_PORT=${BASE_PORT:-18080}
COMPARE=${COMPARE:-}

read -r -a servers <<<"$SERVERS"
scenarios=(plaintext "plaintext-pipe$PIPELINE" json "json-pipe$PIPELINE" app
  "app-pipe$PIPELINE")
declare -A port=([latch]=$BASE_PORT [nginx]=$((BASE_PORT + 1))
  [h2o]=$((BASE_PORT + 2)) [node]=$((BASE_PORT + 3))
  [express]=$((BASE_PORT + 4)) [fastify]=$((BASE_PORT + 5))
  [latch-core]=$((BASE_PORT + 6)))
CG_PORT=$((BASE_PORT + 10))
for s in "${servers[@]}"; do
  [ -n "${port[$s]:-}" ] || { echo "bench: unknown server '$s'" >&2; exit 2; }
done

# serves_app NAME: whether a server answers /app (the framework scenario).
serves_app() {
  case "$1" in latch | latch-core | express | fastify) return 0 ;; esac
  return 1
}
# scen_servers SCENARIO: the servers that take part in it, in SERVERS order:
# /app for those that serve it; the others for all but latch-core (the
# same program as latch there).
scen_servers() {
  local s
  for s in "${servers[@]}"; do
    if [ "${1%%-pipe*}" = app ]; then
      serves_app "$s" && echo "$s"
    elif [ "$s" != latch-core ]; then
      echo "$s"
    fi
  done
}

log() { echo "bench: $*" >&2; }
die() { log "$*"; exit 1; }

# --- build and install ------------------------------------------------------

# Idle-connection measures need many descriptors, in the servers and the
# client: as many as the hard limit allows, up to 65536.
hard=$(ulimit -Hn)
[ "$hard" = unlimited ] && hard=65536
ulimit -n $((hard < 65536 ? hard : 65536))

log "building latch (Release) in build-bench/"
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DLATCH_TESTS=OFF \
  >/dev/null
cmake --build build-bench -j "$(nproc)" --target latch_static >/dev/null
CFLAGS_TOOLS=(-O2 -Wall -Wextra -Wshadow -Wstrict-prototypes)
cc "${CFLAGS_TOOLS[@]}" -Iinclude bench/apps/latch_bench.c \
  build-bench/liblatch.a $(pkg-config --libs libuv jansson hiredis openssl) -lpthread -lm \
  -o build-bench/latch_bench
cc "${CFLAGS_TOOLS[@]}" bench/tools/fixedclient.c -o build-bench/fixedclient
cc "${CFLAGS_TOOLS[@]}" bench/tools/idleconns.c -o build-bench/idleconns

# npm ci only when node_modules is missing or older than the lock file.
if [ ! -f bench/node/node_modules/.package-lock.json ] ||
  [ bench/node/package-lock.json -nt bench/node/node_modules/.package-lock.json ]; then
  log "installing the Node comparators (npm ci in bench/node/)"
  (cd bench/node && npm ci --no-audit --no-fund --loglevel=error)
fi

# --- processes ---------------------------------------------------------------

work=$(mktemp -d)
# h2o and the nginx workers run as nobody and must read their files here.
chmod 755 "$work"
pids=()

# stop_pid PID [SECONDS]: stops a process started here: TERM, up to SECONDS
# [5] for it to exit, then KILL, with its direct children (nginx workers,
# h2o's crash handler; on TERM the process ends them itself).
stop_pid() {
  local pid=$1 kids
  kill -0 "$pid" 2>/dev/null || return 0
  mapfile -t kids < <(pgrep -P "$pid" || true)
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 $((${2:-5} * 10))); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" "${kids[@]}" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local p
  for p in "${pids[@]}"; do stop_pid "$p"; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Fails when something else already listens on a port: loading a stranger's
# server would make the table lie.
port_free() {
  ! ss -Hltn "sport = :$1" | grep -q .
}

write_configs() {
  mkdir -p "$work/nginx" "$work/h2o"
  cat >"$work/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/nginx/nginx-\${PORT}.pid;
error_log $work/nginx/error.log;
events { worker_connections 16384; }
http {
  access_log off;
  keepalive_timeout 120s;
  keepalive_requests 100000000;
  server {
    listen 127.0.0.1:\${PORT};
    location = /plaintext {
      default_type text/plain;
      return 200 "Hello, World!";
    }
    location = /json {
      default_type application/json;
      return 200 '{"message":"Hello, World!"}';
    }
  }
}
CONF
  printf 'Hello, World!' >"$work/h2o/plaintext"
  printf '{"message":"Hello, World!"}' >"$work/h2o/json"
  cat >"$work/h2o/h2o.conf" <<CONF
num-threads: 1
max-connections: 16384
http1-request-timeout: 120
error-log: $work/h2o/error.log
listen:
  host: 127.0.0.1
  port: ${port[h2o]}
hosts:
  default:
    paths:
      /plaintext:
        file.file: $work/h2o/plaintext
        file.mime.setdefaulttype: text/plain
      /json:
        file.file: $work/h2o/json
        file.mime.setdefaulttype: application/json
CONF
}

# nginx config for a port: the same file with the port filled in.
nginx_conf() {
  local conf="$work/nginx/nginx-$1.conf"
  sed "s/\${PORT}/$1/g" "$work/nginx/nginx.conf" >"$conf"
  echo "$conf"
}

# start NAME: starts a server pinned to SERVER_CPU; its pid in pid[NAME].
declare -A pid
start() {
  local name=$1 p=${port[$1]} cmd
  port_free "$p" || die "port $p is already in use: not starting $name"
  case "$name" in
    latch) cmd=(build-bench/latch_bench -p "$p" -k 120000 -w 1) ;;
    latch-core) cmd=(build-bench/latch_bench -p "$p" -k 120000 -w 1 -c) ;;
    nginx) cmd=(nginx -p "$work/nginx" -e "$work/nginx/error.log"
      -c "$(nginx_conf "$p")") ;;
    h2o) cmd=(h2o -c "$work/h2o/h2o.conf") ;;
    node) cmd=(node bench/node/http.js "$p") ;;
    express) cmd=(node bench/node/express.js "$p") ;;
    fastify) cmd=(node bench/node/fastify.js "$p") ;;
  esac
  taskset -c "$SERVER_CPU" "${cmd[@]}" >"$work/$name.log" 2>&1 &
  pid[$name]=$!
  pids+=("$!")
}

# ready NAME: waits (at most 15 s) until the server answers both paths with
# the exact bodies; fails if it died or never did.
ready() {
  local name=$1 p=${port[$1]}
  for _ in $(seq 1 150); do
    kill -0 "${pid[$name]}" 2>/dev/null ||
      die "$name exited at start: $(tail -5 "$work/$name.log")"
    if [ "$(curl -fs --max-time 1 "http://127.0.0.1:$p/plaintext")" = \
      'Hello, World!' ] &&
      [ "$(curl -fs --max-time 1 "http://127.0.0.1:$p/json")" = \
        '{"message":"Hello, World!"}' ]; then
      if ! serves_app "$name"; then return 0; fi
      # /app: the JSON and the middleware's header.
      if curl -fsi --max-time 1 "http://127.0.0.1:$p/app" |
        grep -qi '^X-Content-Type-Options: nosniff' &&
        [ "$(curl -fs --max-time 1 "http://127.0.0.1:$p/app")" = \
          '{"message":"Hello, World!"}' ]; then
        return 0
      fi
    fi
    sleep 0.1
  done
  die "$name did not answer on port $p: $(tail -5 "$work/$name.log")"
}

# holder NAME: sets HOLDER to the pid of the process that holds the
# server's connections (for nginx, its one worker).
holder() {
  if [ "$1" = nginx ]; then
    HOLDER=$(pgrep -P "${pid[nginx]}" | head -1)
    [ -n "$HOLDER" ] || die "no nginx worker under ${pid[nginx]}"
  else
    HOLDER=${pid[$1]}
  fi
}

# --- measures ----------------------------------------------------------------

# callgrind_ir NAME REQUESTS DEPTH PATH: sets IR to the instructions the
# server (latch or nginx, started fresh under callgrind) executed over
# startup, REQUESTS fixed requests and shutdown. (Results go through
# globals, not $(...): a subshell would hide its pids from the cleanup.)
callgrind_ir() {
  local name=$1 n=$2 depth=$3 path=$4 out="$work/callgrind.out" vpid cmd
  port_free "$CG_PORT" || die "port $CG_PORT is already in use"
  rm -f "$out"
  case "$name" in
    latch) cmd=(build-bench/latch_bench -p "$CG_PORT" -w 1) ;;
    latch-core) cmd=(build-bench/latch_bench -p "$CG_PORT" -w 1 -c) ;;
    # One process: the master does the work itself.
    nginx) cmd=(nginx -p "$work/nginx" -e "$work/nginx/error.log"
      -g "master_process off;" -c "$(nginx_conf "$CG_PORT")") ;;
  esac
  taskset -c "$SERVER_CPU" valgrind --tool=callgrind \
    --callgrind-out-file="$out" "${cmd[@]}" >"$work/callgrind.log" 2>&1 &
  vpid=$!
  pids+=("$vpid")
  if ! timeout 300 taskset -c "$CLIENT_CPU" build-bench/fixedclient \
    -p "$CG_PORT" -n "$n" -c "$FIXED_CONNS" -d "$depth" -u "$path" -w 60 \
    >"$work/fixedclient.log" 2>&1; then
    stop_pid "$vpid"
    die "fixedclient against $name failed: $(cat "$work/fixedclient.log")"
  fi
  # SIGTERM: latch drains and exits 0, nginx exits; callgrind then writes
  # its totals.
  stop_pid "$vpid" 60
  [ -f "$out" ] || die "callgrind wrote nothing: $(tail -5 "$work/callgrind.log")"
  IR=$(awk '/^summary:/ {print $2}' "$out")
  [ -n "$IR" ] || die "no summary in the callgrind output"
}

# instr_per_req NAME DEPTH PATH: sets IPR to (Ir(base + N) - Ir(base)) / N,
# where the base run sends one batch on each connection, so that startup,
# connection setup, first-use initialization and shutdown cancel out.
instr_per_req() {
  local base=$((FIXED_CONNS * $2)) a
  callgrind_ir "$1" "$base" "$2" "$3"
  a=$IR
  callgrind_ir "$1" $((base + FIXED_REQUESTS)) "$2" "$3"
  IPR=$(((IR - a) / FIXED_REQUESTS))
}

# --- load --------------------------------------------------------------------

# proc_ticks PID: user + system CPU ticks of a process (all its threads).
proc_ticks() {
  # Fields after "pid (comm) ": the comm may hold spaces, the rest do not.
  sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}
# busy_ticks: user + nice + system + steal ticks of the two CPUs in use,
# summed (interrupt and softirq time left out: the benchmark's own
# networking lands there).
busy_ticks() {
  awk -v a="cpu$SERVER_CPU" -v b="cpu$CLIENT_CPU" \
    '$1 == a || $1 == b { t += $2 + $3 + $4 + $9 } END { print t }' /proc/stat
}

# wrk_run NAME SCENARIO SECONDS: one load. Sets
#   W_RPS   requests/s
#   W_P99   p99 latency in ms ("-" when pipelined, see below)
#   W_ERR   socket errors + non-2xx responses
#   W_SRV   CPU % of the server process
#   W_CLI   CPU % of wrk (near 100: the client, not the server, is the limit)
#   W_NOISE CPU % taken on the two CPUs by anything else (other processes,
#           steal): a disturbed run shows here
#   W_EFF   requests per CPU-second of the server process (meaningful even
#           when wrk is the limit)
# wrk's latency percentiles mean nothing with pipelining: it records one
# sample per batch, and its coordinated-omission correction assumes one
# response per sample, so p90/p99 come out as 0 or noise.
wrk_run() {
  local name=$1 scen=$2 secs=$3 path args out="$work/wrk.out" pipelined=0
  local t0 t1 s0 s1 b0 b1
  path=/${scen%%-pipe*}
  args=(-t1 -c"$CONNS" -d"${secs}s" --timeout 5s --latency)
  if [[ "$scen" == *-pipe* ]]; then
    args+=(-s bench/pipeline.lua)
    pipelined=1
  fi
  t0=$(date +%s.%N)
  s0=$(proc_ticks "${hold[$name]}")
  b0=$(busy_ticks)
  timeout -k 5 $((secs + 30)) taskset -c "$CLIENT_CPU" \
    /usr/bin/time -f "%U %S" -o "$work/wrk.time" \
    wrk "${args[@]}" "http://127.0.0.1:${port[$name]}$path" -- "$PIPELINE" \
    >"$out" 2>&1 || die "wrk against $name failed: $(cat "$out")"
  t1=$(date +%s.%N)
  s1=$(proc_ticks "${hold[$name]}")
  b1=$(busy_ticks)
  awk -v pipelined="$pipelined" -v hz="$(getconf CLK_TCK)" \
    -v t0="$t0" -v t1="$t1" -v srv=$((s1 - s0)) -v busy=$((b1 - b0)) \
    -v cli="$(awk '{print $1 + $2}' "$work/wrk.time")" '
    function ms(v) {
      if (v ~ /us$/) return v / 1000
      if (v ~ /ms$/) return v + 0
      if (v ~ /m$/) return v * 60000
      if (v ~ /s$/) return v * 1000
      return v
    }
    /^ +99%/ { p99 = ms($2) }
    /Socket errors:/ {
      gsub(/,/, ""); err += $4 + $6 + $8 + $10
    }
    /Non-2xx or 3xx responses:/ { err += $5 }
    /^Requests\/sec:/ { rps = $2 }
    END {
      wall = t1 - t0
      srvpct = srv * 100 / hz / wall
      clipct = cli * 100 / wall
      noise = (busy / hz - srv / hz - cli) * 100 / wall
      if (noise < 0) noise = 0
      eff = srvpct > 0 ? sprintf("%.0f", rps * 100 / srvpct) : "-"
      # (In a print list, an unparenthesized ">" would be a redirection.)
      printf "%.0f %s %d %.0f %.0f %.0f %s\n", rps,
        (pipelined ? "-" : sprintf("%.3f", p99)), err, srvpct, clipct, noise,
        eff
    }' "$out" >"$work/wrk.num"
  read -r W_RPS W_P99 W_ERR W_SRV W_CLI W_NOISE W_EFF <"$work/wrk.num"
}

# column_median "a/b/c d/e/f ..." FIELD: the median of one field over the
# rounds ("-" stays "-").
column_median() {
  tr ' ' '\n' <<<"$1" | grep . | cut -d/ -f"$2" | sort -g |
    awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'
}

# --- run ---------------------------------------------------------------------

stamp=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p bench/results
result="bench/results/$stamp.txt"
if [ -z "$COMPARE" ]; then
  # The newest earlier result (the names sort by time; this run's file does
  # not exist yet).
  for f in bench/results/*.txt; do [ -f "$f" ] && COMPARE=$f; done
fi

write_configs
for s in "${servers[@]}"; do start "$s"; done
declare -A hold
for s in "${servers[@]}"; do
  ready "$s"
  holder "$s"
  hold[$s]=$HOLDER
done

has() { [[ " ${servers[*]} " == *" $1 "* ]]; }
version() {
  case "$1" in
    latch) echo "latch $(git describe --always --dirty 2>/dev/null || echo '?')" ;;
    latch-core) ;; # the same program
    nginx) nginx -v 2>&1 | sed 's/^nginx version: //; s|/| |' ;;
    h2o) h2o --version | head -1 | sed 's/ version / /' ;;
    node) echo "node $(node --version)" ;;
    express | fastify)
      echo "$1 $(node -p "require('./bench/node/node_modules/$1/package.json').version")"
      ;;
  esac
}

{
  echo "# latch bench, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo |
    cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/^Mem:/ {print $2}') GiB," \
    "Linux $(uname -r), Debian $(cat /etc/debian_version 2>/dev/null || echo '?')"
  echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  vs=("${servers[@]}")
  # Express and Fastify run on node: name its version with them.
  if ! has node && { has express || has fastify; }; then vs+=(node); fi
  echo "# versions: $(for s in "${vs[@]}"; do version "$s"; done |
    paste -sd, | sed 's/,/, /g'); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2);" \
    "$(valgrind --version); $(cc --version | head -1); libuv $(pkg-config --modversion libuv)"
  echo "# servers: single worker each, pinned to CPU $SERVER_CPU; wrk -t1" \
    "pinned to CPU $CLIENT_CPU"
  if has h2o; then
    echo "# h2o serves /plaintext and /json as static files (file.file):" \
      "h2o 2.2 cannot send a fixed body without mruby"
  fi
} | tee "$result"

measure_rows=()
if [ "$MEASURES" = 1 ]; then
  log "idle keep-alive connections: $IDLE_CONNS per server"
  for s in $(scen_servers json); do
    if out=$(timeout 300 taskset -c "$CLIENT_CPU" build-bench/idleconns \
      -p "${port[$s]}" -P "${hold[$s]}" -n "$IDLE_CONNS" 2>&1); then
      v=$(sed -n 's/.*bytes_per_conn=\(-\?[0-9]*\).*/\1/p' <<<"$out")
    else
      log "idleconns against $s: $out"
      v=failed
    fi
    measure_rows+=("idle-conn-bytes $s $v")
  done
  log "instructions per request under callgrind ($FIXED_REQUESTS requests" \
    "over $FIXED_CONNS connections)"
  for s in latch latch-core nginx; do
    has "$s" || continue
    if [ "$s" = latch-core ]; then
      ms=("app 1")
    elif [ "$s" = latch ]; then
      ms=("plaintext 1" "json 1" "plaintext $PIPELINE" "app 1")
    else
      ms=("plaintext 1" "json 1" "plaintext $PIPELINE")
    fi
    for m in "${ms[@]}"; do
      read -r path depth <<<"$m"
      label=$path
      [ "$depth" != 1 ] && label="$path-pipe$depth"
      instr_per_req "$s" "$depth" "/$path"
      measure_rows+=("instr/req:$label $s $IPR")
    done
  done
fi

declare -A rps p99 srv cli noise eff errs raw
if [ "$LOAD" = 1 ]; then
  for scen in "${scenarios[@]}"; do
    if [ "$WARMUP" != 0 ]; then
      log "$scen: warm-up, ${WARMUP}s per server"
      for s in $(scen_servers "$scen"); do wrk_run "$s" "$scen" "$WARMUP"; done
    fi
    for r in $(seq 1 "$ROUNDS"); do
      log "$scen: round $r of $ROUNDS"
      for s in $(scen_servers "$scen"); do
        wrk_run "$s" "$scen" "$DURATION"
        raw[$scen.$s]+="$W_RPS/$W_P99/$W_ERR/$W_SRV/$W_CLI/$W_NOISE/$W_EFF "
        errs[$scen.$s]=$((${errs[$scen.$s]:-0} + W_ERR))
      done
    done
    for s in $(scen_servers "$scen"); do
      rps[$scen.$s]=$(column_median "${raw[$scen.$s]}" 1)
      p99[$scen.$s]=$(column_median "${raw[$scen.$s]}" 2)
      srv[$scen.$s]=$(column_median "${raw[$scen.$s]}" 4)
      cli[$scen.$s]=$(column_median "${raw[$scen.$s]}" 5)
      noise[$scen.$s]=$(column_median "${raw[$scen.$s]}" 6)
      eff[$scen.$s]=$(column_median "${raw[$scen.$s]}" 7)
    done
  done
fi

# ratio SCENARIO SERVER: latch's median req/s over the server's.
ratio() {
  local l=${rps[$1.latch]:-} o=${rps[$1.$2]:-}
  if [ -z "$l" ] || [ -z "$o" ] || [ "$o" = 0 ]; then
    echo "-"
  else
    awk -v l="$l" -v o="$o" 'BEGIN { printf "%.2fx", l / o }'
  fi
}

{
  if [ "$LOAD" = 1 ]; then
    echo
    echo "# load: wrk -t1 -c$CONNS --timeout 5s --latency, $ROUNDS rounds of" \
      "${DURATION}s per server, interleaved, after a ${WARMUP}s warm-up;" \
      "medians of the rounds"
    echo "# pipe$PIPELINE: $PIPELINE requests per write (p99 not shown: wrk's" \
      "percentiles are wrong under pipelining); srv%: CPU of the server" \
      "process; cli%: CPU of wrk (near 100: wrk is the limit); noise%: CPU" \
      "taken by other processes and steal on the two CPUs; req/cpu-s:" \
      "requests per CPU-second of the server process; errors: socket" \
      "errors + non-2xx, all rounds"
    if has h2o; then
      echo "# h2o: static files (no fixed-body handler without mruby in 2.2)"
    fi
    printf '%-18s %-10s %10s %9s %5s %5s %6s %10s %8s %7s\n' scenario server \
      req/s p99_ms srv% cli% noise% req/cpu-s latch/x errors
    for scen in "${scenarios[@]}"; do
      for s in $(scen_servers "$scen"); do
        printf '%-18s %-10s %10s %9s %5s %5s %6s %10s %8s %7s\n' "$scen" "$s" \
          "${rps[$scen.$s]}" "${p99[$scen.$s]}" "${srv[$scen.$s]}" \
          "${cli[$scen.$s]}" "${noise[$scen.$s]}" "${eff[$scen.$s]}" \
          "$(ratio "$scen" "$s")" "${errs[$scen.$s]}"
      done
    done
  fi
  if [ ${#measure_rows[@]} -gt 0 ]; then
    echo
    echo "# noise-free measures: idle-conn-bytes = RSS growth per idle" \
      "keep-alive connection ($IDLE_CONNS conns, one request each);" \
      "instr/req = callgrind instructions per request, user space only" \
      "($FIXED_REQUESTS sequential requests over $FIXED_CONNS conns)"
    printf '%-26s %-8s %10s\n' measure server value
    for row in "${measure_rows[@]}"; do
      # shellcheck disable=SC2086
      printf '%-26s %-8s %10s\n' $row
    done
  fi
  echo
  echo "# the project's bars"
  if [ "$LOAD" = 1 ] && has latch; then
    bar() { # SCENARIO SERVER MIN
      local r
      has "$2" || return 0
      r=$(ratio "$1" "$2")
      awk -v r="${r%x}" -v m="$3" -v d="$1 latch/$2 >= ${3}x" \
        -v cli="${cli[$1.latch]:-0}" \
        'BEGIN { printf "bar: %-36s %8s  %s%s\n", d, r "x",
          (r + 0 >= m ? "met" : "NOT MET"),
          (cli + 0 >= 95 ? " (latch run limited by wrk: cli% " cli ")" : "") }'
    }
    bar plaintext nginx 1.0
    bar plaintext h2o 1.0
    bar "plaintext-pipe$PIPELINE" nginx 3
    bar json express 10
    bar json fastify 3
    # The framework (two middlewares and a route) against the same bytes
    # from one handler: under 15% cost means at least 0.87x (1/1.15).
    # Pipelined, the server rather than wrk is the limit.
    bar app latch-core 0.87
    bar "app-pipe$PIPELINE" latch-core 0.87
    bar app express 10
    bar app fastify 3
  fi
  # The same cost in instructions, free of the machine's noise.
  fw=""
  core=""
  for row in "${measure_rows[@]}"; do
    read -r m s v <<<"$row"
    [ "$m $s" = "instr/req:app latch" ] && fw=$v
    [ "$m $s" = "instr/req:app latch-core" ] && core=$v
  done
  if [ -n "$fw" ] && [ -n "$core" ] && [ "$core" -gt 0 ]; then
    awk -v f="$fw" -v c="$core" 'BEGIN { p = (f - c) * 100 / c
      printf "bar: %-36s %7.1f%%  %s\n", "app instr/req latch vs core <= +15%",
        p, (p <= 15 ? "met" : "NOT MET") }'
  fi
  for row in "${measure_rows[@]}"; do
    read -r m s v <<<"$row"
    if [ "$m $s" = "idle-conn-bytes latch" ]; then
      awk -v v="$v" 'BEGIN { printf "bar: %-36s %8s  %s\n",
        "idle-conn-bytes latch <= 1024", v,
        (v ~ /^-?[0-9]+$/ && v <= 1024 ? "met" : "NOT MET") }'
    fi
  done
  if [ "$LOAD" = 1 ]; then
    # The worst median noise of any row: a busy machine makes req/s and
    # p99 unreliable (the callgrind and RSS measures are not affected).
    worst=0
    for k in "${!noise[@]}"; do
      [ "${noise[$k]}" -gt "$worst" ] && worst=${noise[$k]}
    done
    if [ "$worst" -gt 10 ]; then
      echo "# WARNING: other processes or steal took up to $worst% of a CPU" \
        "during the load (noise% column): req/s and p99 are disturbed"
    fi
  fi
  if [ "$LOAD" = 1 ]; then
    echo
    echo "# raw per round (req/s / p99_ms / errors / srv% / cli% / noise% /" \
      "req/cpu-s)"
    for scen in "${scenarios[@]}"; do
      for s in $(scen_servers "$scen"); do
        echo "# $scen $s: ${raw[$scen.$s]}"
      done
    done
  fi
  echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee -a "$result"

# Change per row against an earlier result: req/s and p99 of the load rows,
# the value of the measure rows.
if [ -n "$COMPARE" ] && [ -f "$COMPARE" ]; then
  echo
  echo "# change vs $COMPARE" | tee -a "$result"
  awk '
    FNR == 1 { file++ }
    /^#/ || NF == 0 { next }
    $1 ~ /^(plaintext|json|app)/ && NF == 10 {
      key = $1 " " $2
      if (file == 1) { orps[key] = $3; op99[key] = $4; oeff[key] = $8; next }
      if (key in orps && orps[key] > 0)
        printf "%-18s %-10s req/s %8s -> %8s %+6.1f%%  req/cpu-s %8s -> %8s" \
          "  p99_ms %7s -> %7s\n",
          $1, $2, orps[key], $3, ($3 - orps[key]) * 100 / orps[key],
          oeff[key], $8, op99[key], $4
      next
    }
    $1 ~ /^(idle-conn|instr)/ && NF == 3 {
      key = $1 " " $2
      if (file == 1) { oval[key] = $3; next }
      if (key in oval && oval[key] ~ /^-?[0-9]+$/ && $3 ~ /^-?[0-9]+$/ &&
          oval[key] != 0)
        printf "%-26s %-8s %10s -> %10s %+7.1f%%\n", $1, $2, oval[key], $3,
          ($3 - oval[key]) * 100 / oval[key]
    }' "$COMPARE" "$result" | tee -a "$result"
fi
echo
echo "results: $result"
