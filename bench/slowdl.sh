#!/usr/bin/env bash
# bench/slowdl.sh - the server's memory while 1,000 clients download a
# 100 MB file slowly (issue 13), latch (`latch serve`) beside nginx
# (sendfile on), one worker each, one after the other in the same run.
#
# Each client (bench/tools/slowdl.c, one process, non-blocking sockets)
# has a small receive buffer and reads at RATE bytes/s for DURATION
# seconds, then all close: nobody gets the whole file, so the server holds
# 1,000 responses in the middle of their bodies the whole time. The file
# is sparse (it costs no disk, and the page cache holds only the part
# read). Printed per server: its resident memory before the clients came
# (VmRSS), the largest sum of VmRSS sampled every 250 ms while they read
# (nginx: master + worker), the peak VmHWM, VmRSS 1 s after they closed,
# and (max - before) / connections. Figures are reported, never asserted.
#
#   bench/slowdl.sh                     latch and nginx, 1,000 clients, 20 s
#   CONNS=200 DURATION=5 bench/slowdl.sh
#   LATCH_B=/tmp/latch-main SERVERS="latch-b latch nginx" bench/slowdl.sh
#
# Needs: build/latch (make build), nginx, cc, taskset.
set -euo pipefail

cd "$(dirname "$0")/.."
. bench/lib.sh
SERVERS=${SERVERS:-latch nginx}
CONNS=${CONNS:-1000}
RATE=${RATE:-65536}        # bytes/s each client reads
DURATION=${DURATION:-20}   # seconds of reading
RCVBUF=${RCVBUF:-16384}    # each client's SO_RCVBUF (the kernel doubles it)
SIZE_MB=${SIZE_MB:-100}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
BASE_PORT=${BASE_PORT:-18580}
LATCH_BIN=${LATCH_BIN:-build/latch}
# latch holds three descriptors per download (the socket, the file, and a
# dup of the socket that its writability watch polls), nginx two.
NOFILE=$((CONNS * 4 + 1024))

die() { echo "slowdl.sh: $*" >&2; exit 1; }
[ -x "$LATCH_BIN" ] || die "$LATCH_BIN missing: make build first"
for t in nginx cc taskset curl; do
  command -v "$t" >/dev/null || die "$t missing (scripts/deps.sh bench)"
done
[ "$(ulimit -Hn)" = unlimited ] || [ "$(ulimit -Hn)" -ge "$NOFILE" ] ||
  die "the hard RLIMIT_NOFILE ($(ulimit -Hn)) is below $NOFILE"
ulimit -n "$NOFILE"

work=$(mktemp -d /tmp/latch-slowdl.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/www" "$work/nginx"
truncate -s "${SIZE_MB}M" "$work/www/100m.bin"
chmod 644 "$work/www/100m.bin"
cc -O2 -Wall -Wextra bench/tools/slowdl.c -o "$work/slowdl"

nginx_static_conf "$work" "$NOFILE" >"$work/nginx/nginx.conf"

start() { # name port -> sets SPID (the process to stop), MPIDS (to measure)
  local name=$1 p=$2 bin=$LATCH_BIN
  case $name in
    latch | latch-b)
      if [ "$name" = latch-b ]; then
        bin=${LATCH_B:-}
        [ -x "$bin" ] || die "latch-b needs LATCH_B=binary"
      fi
      taskset -c "$SERVER_CPU" "$bin" serve "$work/www" --port "$p" \
        --workers 1 >"$work/$name.log" 2>&1 & ;;
    nginx) sed "s/PORT/$p/" "$work/nginx/nginx.conf" >"$work/nginx/$p.conf"
      taskset -c "$SERVER_CPU" nginx -p "$work/nginx" \
        -e "$work/nginx/error.log" -c "$work/nginx/$p.conf" \
        >"$work/$name.log" 2>&1 & ;;
    *) die "unknown server $name" ;;
  esac
  SPID=$!
  pids+=("$SPID")
  for _ in $(seq 100); do
    curl -sf -r 0-0 -o /dev/null "http://127.0.0.1:$p/100m.bin" && break
    sleep 0.1
  done
  curl -sf -r 0-0 -o /dev/null "http://127.0.0.1:$p/100m.bin" ||
    die "$name did not answer on $p: $(tail -3 "$work/$name.log")"
  MPIDS=$SPID
  if [ "$name" = nginx ]; then MPIDS="$SPID,$(pgrep -P "$SPID" | head -1)"; fi
}

echo "# $(date -u +%FT%TZ) $(uptime | sed 's/.*load/load/')"
echo "# $CONNS clients, ${RATE} B/s each for ${DURATION} s, SO_RCVBUF $RCVBUF, ${SIZE_MB} MB sparse file"
port=$BASE_PORT
for s in $SERVERS; do
  port=$((port + 1))
  start "$s" "$port"
  out=$(taskset -c "$CLIENT_CPU" timeout $((DURATION + CONNS / 50 + 30)) \
    "$work/slowdl" -p "$port" -P "$MPIDS" -u /100m.bin -n "$CONNS" \
    -r "$RATE" -t "$DURATION" -b "$RCVBUF") || true
  printf '%-8s %s\n' "$s" "${out#slowdl: }"
  kill "$SPID" 2>/dev/null || true
  wait "$SPID" 2>/dev/null || true
done
