#!/usr/bin/env bash
# bench/tools/syscalls_files.sh - system calls per static-file request:
# each server runs under `strace -f -c` (all its threads) while wrk
# fetches one file over keep-alive for a few seconds; the table divides
# each call's count by the requests wrk completed (plus the few of the
# readiness check). Counts, not times: strace slows every server alike,
# and what it counts does not depend on the machine's load, except
# epoll_wait (how many requests one wakeup finds depends on timing).
#
#   bench/tools/syscalls_files.sh                      latch and nginx, 1k.bin
#   LATCH_B=/tmp/latch-main SERVERS="latch-b latch nginx" FILE=1m.bin \
#     bench/tools/syscalls_files.sh
#
# Needs: strace, wrk, nginx, curl, taskset; build/latch (make build).
set -euo pipefail

cd "$(dirname "$0")/../.."
. bench/lib.sh
SERVERS=${SERVERS:-latch nginx}
FILE=${FILE:-1k.bin}
DURATION=${DURATION:-3}
CONNS=${CONNS:-16}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
BASE_PORT=${BASE_PORT:-18680}
LATCH_BIN=${LATCH_BIN:-build/latch}

die() { echo "syscalls_files.sh: $*" >&2; exit 1; }
for t in strace wrk nginx curl taskset; do
  command -v "$t" >/dev/null || die "$t missing (scripts/deps.sh bench)"
done

work=$(mktemp -d /tmp/latch-syscalls.XXXXXX)
chmod 755 "$work"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/www" "$work/nginx"
head -c 1024 /dev/urandom >"$work/www/1k.bin"
head -c $((1024 * 1024)) /dev/urandom >"$work/www/1m.bin"
chmod 644 "$work/www/"*
[ -f "$work/www/$FILE" ] || die "FILE is 1k.bin or 1m.bin"

nginx_static_conf "$work" 4096 >"$work/nginx/nginx.conf"

port=$BASE_PORT
for s in $SERVERS; do
  port=$((port + 1))
  case $s in
    latch) cmd=("$LATCH_BIN" serve "$work/www" --port "$port" --workers 1) ;;
    latch-b) [ -x "${LATCH_B:-}" ] || die "latch-b needs LATCH_B=binary"
      cmd=("$LATCH_B" serve "$work/www" --port "$port" --workers 1) ;;
    nginx) sed "s/PORT/$port/" "$work/nginx/nginx.conf" >"$work/nginx/$port.conf"
      cmd=(nginx -p "$work/nginx" -e "$work/nginx/error.log" -c "$work/nginx/$port.conf") ;;
    *) die "unknown server $s" ;;
  esac
  taskset -c "$SERVER_CPU" strace -f -c -o "$work/$s.strace" "${cmd[@]}" \
    >"$work/$s.log" 2>&1 &
  spid=$!
  checks=0
  for _ in $(seq 100); do
    checks=$((checks + 1))
    curl -sf -o /dev/null "http://127.0.0.1:$port/$FILE" && break
    sleep 0.1
  done
  out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" \
    "http://127.0.0.1:$port/$FILE")
  reqs=$(awk '/requests in/ { print $1 }' <<<"$out")
  # nginx's master stops its worker on SIGTERM; latch drains and exits
  if [ "$s" = nginx ]; then kill "$(cat "$work/nginx/nginx.pid")"; else
    kill "$(pgrep -P "$spid" | head -1)"; fi
  wait "$spid" 2>/dev/null || true
  n=$((reqs + 1))
  echo "== $s $FILE: $reqs requests (wrk -c$CONNS ${DURATION}s) + 1 check; calls per request"
  awk -v n="$n" '$1 ~ /^[0-9.]+$/ && NF >= 5 {
      calls = $4; name = $NF; errs = (NF == 6) ? $5 : 0
      if (calls / n >= 0.005)
        printf "  %-16s %8.3f  (errors %.3f)\n", name, calls / n, errs / n
    }' \
    "$work/$s.strace" | sort -k2 -n -r
done
