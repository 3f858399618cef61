#!/usr/bin/env bash
# test_cli.sh - the `latch` command as a user meets it: --version (the
# header's version), --help for each command (every option named), bad
# options and values (the usage on stderr, exit 2, nothing served), and
# servers started with the operations options, checked where they act:
# the access log on stdout (JSON and nginx's combined format), the metrics
# over HTTP, the lifecycle trace on stderr (and none without --debug),
# HTTPS with --tls, and a clean exit on SIGTERM. Both commands, demo and
# serve, take the same options. latch serve --proxy in front of a python3
# upstream that echoes what it received: the prefix kept or replaced,
# matched before the files, a POST body passed on.
#
# Usage (ctest passes these): test_cli.sh LATCH_BIN SOURCE_DIR
set -euo pipefail

bin=$1
src=$2
tmp=$(mktemp -d)
pid=
uppid=
cleanup() {
  if [ -n "$pid" ]; then kill -KILL "$pid" 2>/dev/null || true; fi
  if [ -n "$uppid" ]; then kill -KILL "$uppid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
  echo "test_cli: FAIL: $*" >&2
  exit 1
}

# start NAME ARGS...: runs latch ARGS in the background, stdout in
# $tmp/NAME.out and stderr in $tmp/NAME.err, and waits (10 s at most) for
# the line that says where it listens; sets pid and port.
start() {
  local name=$1
  shift
  # Made (and emptied) here: the redirections below run in the background
  # child, and the loop could read before they did (sed: no such file).
  : >"$tmp/$name.out"
  : >"$tmp/$name.err"
  "$bin" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
  pid=$!
  port=
  for _ in $(seq 1 100); do
    port=$(sed -n 's|^latch: .*listening on https\?://127.0.0.1:\([0-9]*\)/$|\1|p' \
      "$tmp/$name.out")
    [ -n "$port" ] && return 0
    kill -0 "$pid" 2>/dev/null || fail "latch $* exited: $(cat "$tmp/$name.err")"
    sleep 0.1
  done
  fail "latch $*: no address printed in 10 s"
}

# stop: SIGTERM drains the server; it must exit 0 within 10 s.
stop() {
  local rc=0 i
  kill -TERM "$pid"
  for i in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  [ "$i" -lt 100 ] || fail "no exit 10 s after SIGTERM"
  wait "$pid" || rc=$?
  pid=
  [ "$rc" -eq 0 ] || fail "exit $rc after SIGTERM"
}

get() { curl -sS --max-time 10 "$@"; }

# --version and `latch version`: the header's numbers.
v=$(sed -n 's/^#define LATCH_VERSION_\(MAJOR\|MINOR\|PATCH\) \([0-9]*\)$/\2/p' \
  "$src/include/latch.h" | paste -sd.)
[[ "$v" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || fail "no version in latch.h: '$v'"
[ "$("$bin" --version)" = "latch $v" ] || fail "--version: $("$bin" --version)"
[ "$("$bin" version)" = "latch $v" ] || fail "version: $("$bin" version)"

# --help names every option; exit 0, on stdout.
shared=(--host --port --workers --tls --access-log --metrics --debug)
for cmd in "" demo serve; do
  # shellcheck disable=SC2086
  help=$("$bin" $cmd --help) || fail "latch $cmd --help exited $?"
  grep -q "^usage: latch" <<<"$help" || fail "latch $cmd --help: no usage"
  for o in "${shared[@]}" --help; do
    grep -q -- "$o" <<<"$help" || fail "latch $cmd --help does not name $o"
  done
done
for o in --no-listing --max-age --proxy; do
  grep -q -- "$o" <<<"$("$bin" serve --help)" ||
    fail "latch serve --help does not name $o"
done
grep -q -- "--version" <<<"$("$bin" --help)" ||
  fail "latch --help does not name --version"

# Bad options and values: a reason and the usage on stderr, nothing on
# stdout (in particular no "listening" line), exit 2.
bad_cases=(
  "--nope" "-x" "--port=x" "--port 70000" "--port -1" "--workers many"
  "--host=" "--access-log=xml" "--metrics=nope" "--tls" "--tls cert.pem"
  "extra" "demo --nope" "demo --port" "serve --nope" "serve --port x"
  "serve --max-age -3" "serve a b" "serve --access-log=yaml" "bogus"
  "serve --proxy" "serve --proxy /api" "serve --proxy api=http://h:1/"
  "serve --proxy /api=" "serve --proxy /api=ftp://h/"
  "serve --proxy /api=http://h:99999/" "serve --proxy /api=http://h:1?q"
  "serve --proxy =http://h:1/" "serve --proxy /a?b=http://h:1/"
)
for bad in "${bad_cases[@]}"; do
  rc=0
  # shellcheck disable=SC2086
  timeout 10 "$bin" $bad >"$tmp/bad.out" 2>"$tmp/bad.err" || rc=$?
  [ "$rc" -eq 2 ] || fail "'latch $bad' exited $rc, not 2"
  grep -q "^usage: latch" "$tmp/bad.err" || fail "'latch $bad': no usage"
  [[ "$(head -1 "$tmp/bad.err")" != "usage: latch"* ]] ||
    fail "'latch $bad': the usage, but no reason first"
  [ ! -s "$tmp/bad.out" ] || fail "'latch $bad' wrote to stdout"
done

# The demo with every operations option, values joined by '='.
start demo -p 0 -w 1 --access-log=json --metrics --debug
[ "$(get "http://127.0.0.1:$port/hello")" = "Hello, World!" ] ||
  fail "demo: GET /hello"
metrics=$(get "http://127.0.0.1:$port/metrics")
grep -qx 'latch_requests_total{code="200"} 1' <<<"$metrics" ||
  fail "demo metrics: $(head -5 <<<"$metrics")"
stop
grep -q '"method":"GET","url":"/hello",.*"status":200' "$tmp/demo.out" ||
  fail "demo: no JSON access log line: $(cat "$tmp/demo.out")"
grep -q '"url":"/metrics"' "$tmp/demo.out" || fail "the scrape was not logged"
grep -Eq "^LATCH [0-9]+: req [0-9]+ GET /hello: dispatched$" "$tmp/demo.err" ||
  fail "demo: no trace: $(head -5 "$tmp/demo.err")"
grep -Eq "^LATCH [0-9]+: req [0-9]+ GET /hello: headers sent at latch_res_send \(tools/latch/demo.c:[0-9]+\)$" \
  "$tmp/demo.err" || fail "demo: the trace names no site: $(head -5 "$tmp/demo.err")"

# latch serve with values given apart, a metrics path of its own, no
# trace without --debug.
mkdir "$tmp/www"
printf 'hello\n' >"$tmp/www/a.txt"
start serve serve "$tmp/www" --port 0 --workers 1 --access-log combined \
  --metrics=/_m
[ "$(get "http://127.0.0.1:$port/a.txt")" = "hello" ] || fail "serve: GET /a.txt"
get -A 'cli "test"' -e "http://ref/" "http://127.0.0.1:$port/missing" \
  >/dev/null
metrics=$(get "http://127.0.0.1:$port/_m")
grep -qx 'latch_requests_total{code="200"} 1' <<<"$metrics" ||
  fail "serve metrics at /_m: $(head -5 <<<"$metrics")"
grep -qx 'latch_requests_total{code="404"} 1' <<<"$metrics" ||
  fail "serve metrics: no 404: $(head -5 <<<"$metrics")"
stop
d='\[[0-9]{2}/[A-Z][a-z]{2}/[0-9]{4}:[0-9]{2}:[0-9]{2}:[0-9]{2} [+-][0-9]{4}\]'
grep -Eq "^127\.0\.0\.1 - - $d \"GET /a\.txt HTTP/1\.1\" 200 6 \"-\" \"curl/[^\"]+\"$" \
  "$tmp/serve.out" || fail "serve: no combined line for /a.txt: $(cat "$tmp/serve.out")"
grep -Eq "^127\.0\.0\.1 - - $d \"GET /missing HTTP/1\.1\" 404 [0-9]+ \"http://ref/\" \"cli \\\\x22test\\\\x22\"$" \
  "$tmp/serve.out" || fail "serve: no combined line for /missing: $(cat "$tmp/serve.out")"
! grep -q "^LATCH " "$tmp/serve.err" || fail "a trace without --debug"

# latch serve --proxy: an upstream that answers with what it received.
cat >"$tmp/up.py" <<'EOF'
import http.server, os, sys
class Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n).decode() if n else ""
        out = ("%s %s host=%s xff=%s body=%s\n" % (self.command, self.path,
               self.headers.get("Host"), self.headers.get("X-Forwarded-For"),
               body)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    do_GET = do_POST = answer
    def log_message(self, *args):
        pass
s = http.server.HTTPServer(("127.0.0.1", 0), Echo)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write("%d\n" % s.server_address[1])
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
s.serve_forever()
EOF
python3 "$tmp/up.py" "$tmp/up.port" &
uppid=$!
for _ in $(seq 1 100); do
  [ -s "$tmp/up.port" ] && break
  kill -0 "$uppid" 2>/dev/null || fail "the python3 upstream exited"
  sleep 0.1
done
up=$(cat "$tmp/up.port") || fail "the python3 upstream printed no port"
mkdir "$tmp/www/api"
printf 'on disk\n' >"$tmp/www/api/s.txt"
start proxy serve "$tmp/www" --port 0 --workers 1 \
  --proxy "/api=http://127.0.0.1:$up/" --proxy "/raw=http://127.0.0.1:$up" \
  --proxy="/v/=http://127.0.0.1:$up/base"
ua="127.0.0.1:$up"
expect() { # expect PATH WANT [curl args]: the body at PATH is WANT
  local path=$1 want=$2 got
  shift 2
  got=$(get "$@" "http://127.0.0.1:$port$path") || fail "proxy: $path: curl"
  [ "$got" = "$want" ] || fail "proxy: $path: '$got', not '$want'"
}
# A URL with a path replaces the prefix; the files are not looked at.
expect /api/s.txt "GET /s.txt host=$ua xff=127.0.0.1 body="
expect "/api/users?x=1" "GET /users?x=1 host=$ua xff=127.0.0.1 body="
expect /api "GET / host=$ua xff=127.0.0.1 body="
expect /api/items "POST /items host=$ua xff=127.0.0.1 body=a=1&b=2" \
  -d 'a=1&b=2'
# A URL without one gets the path as received; a base path goes first.
expect /raw/users "GET /raw/users host=$ua xff=127.0.0.1 body="
expect /raw/items "POST /raw/items host=$ua xff=127.0.0.1 body=x" -d x
expect /v/a/b "GET /base/a/b host=$ua xff=127.0.0.1 body="
# A prefix matches at a segment boundary only; the rest is files.
expect /a.txt hello
[ "$(get -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/apix")" = 404 ] ||
  fail "proxy: /apix was not left to the files"
stop
kill -TERM "$uppid"
wait "$uppid" 2>/dev/null || true
uppid=

# --tls CERT KEY, on both commands.
if command -v openssl >/dev/null; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
    -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null
  start tls serve "$tmp/www" --port 0 --workers 1 --tls "$tmp/cert.pem" \
    "$tmp/key.pem"
  grep -q "listening on https://" "$tmp/tls.out" || fail "serve --tls: not https"
  [ "$(get -k "https://127.0.0.1:$port/a.txt")" = "hello" ] ||
    fail "serve --tls: GET /a.txt"
  stop
  start tls demo --port 0 -w 1 --tls "$tmp/cert.pem" "$tmp/key.pem"
  [ "$(get -k "https://127.0.0.1:$port/hello")" = "Hello, World!" ] ||
    fail "demo --tls: GET /hello"
  stop
fi
echo "test_cli: all passed"
