#!/usr/bin/env bash
# test_install.sh - what a new user does after `make install`, against a
# staged install: examples/hello.c built out of tree with pkg-config and
# with CMake's find_package(latch), each program started, asked GET /hello
# and stopped with SIGTERM (it must drain and exit 0, silent on stderr).
#
# Two installs: one with --prefix in a temp dir (latch.pc must name that
# prefix and carry an rpath, since the loader does not search it), and
# one with DESTDIR (files under the stage, latch.pc naming the real
# prefix, and no ldconfig run: that is the package manager's job).
#
# Usage (ctest passes these): test_install.sh BUILD_DIR SOURCE_DIR
# LATCH_TEST_CFLAGS: extra compiler/linker flags (the sanitizer build's).
set -euo pipefail
# No `strings | grep -q` below: grep -q exits at the first match, strings
# then dies of SIGPIPE, and pipefail turns a found name into a failure
# (seen under ASan, whose binaries are large).

build=$1
src=$2
flags=${LATCH_TEST_CFLAGS:-}
tmp=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

fail() { echo "test_install: FAIL: $*" >&2; exit 1; }

# Starts $1 (with LD_LIBRARY_PATH=$2 only when given), waits (bounded) for its "listening on" line, checks one
# response and a clean SIGTERM exit.
run_hello() {
  local bin=$1 out=$tmp/out err=$tmp/err port= i body rc
  # Emptied here, not only by the redirections below: those run in the
  # background child, and the loop could read the previous program's port
  # before the child truncated the file.
  : >"$out"
  : >"$err"
  if [ $# -gt 1 ]; then
    LD_LIBRARY_PATH=$2 "$bin" 0 >"$out" 2>"$err" &
  else
    env -u LD_LIBRARY_PATH "$bin" 0 >"$out" 2>"$err" &
  fi
  pid=$!
  for i in $(seq 1 100); do
    port=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\)/.*|\1|p' "$out")
    [ -n "$port" ] && break
    kill -0 "$pid" 2>/dev/null || fail "$bin exited early: $(cat "$err")"
    sleep 0.1
  done
  [ -n "$port" ] || fail "$bin printed no address"
  body=$(curl -sS --max-time 10 "http://127.0.0.1:$port/hello")
  [ "$body" = "Hello, World!" ] || fail "$bin answered '$body'"
  kill -TERM "$pid"
  rc=0
  wait "$pid" || rc=$?
  pid=
  [ "$rc" -eq 0 ] || fail "$bin exited $rc after SIGTERM"
  [ ! -s "$err" ] || fail "$bin wrote on stderr: $(cat "$err")"
  echo "ok: $bin"
}

# 1. --prefix install into a private directory.
prefix=$tmp/prefix
cmake --install "$build" --prefix "$prefix" >"$tmp/install.log"
grep -q "Ran ldconfig" "$tmp/install.log" && fail "ldconfig ran for $prefix"
pc=$(find "$prefix" -name latch.pc)
[ -n "$pc" ] || fail "no latch.pc installed"
grep -qx "prefix=$prefix" "$pc" || fail "latch.pc names another prefix"
export PKG_CONFIG_PATH=$(dirname "$pc")
v=$(sed -n 's/^#define LATCH_VERSION_\(MAJOR\|MINOR\|PATCH\) \([0-9]*\)$/\2/p' \
  "$src/include/latch.h" | paste -sd.)
[ "$(pkg-config --modversion latch)" = "$v" ] ||
  fail "latch.pc's version is not latch.h's ($v)"
man1=$prefix/share/man/man1/latch.1
[ -f "$man1" ] || fail "man/latch.1 not installed"
# The installed page renders: groff with every warning on says nothing,
# man -l shows its sections and names every option --help names.
w=$(groff -man -Tutf8 -ww -z "$man1" 2>&1) || fail "groff: $w"
[ -z "$w" ] || fail "latch.1 renders with warnings: $w"
page=$(LC_ALL=C MANWIDTH=80 man -l "$man1" 2>"$tmp/man.err" | tr -s ' ') ||
  fail "man -l latch.1: $(cat "$tmp/man.err")"
[ ! -s "$tmp/man.err" ] || fail "man -l latch.1: $(cat "$tmp/man.err")"
for word in NAME SYNOPSIS DESCRIPTION OPTIONS ENVIRONMENT "EXIT STATUS" \
  "latch serve" "latch demo" --host --port --workers --tls --access-log \
  --metrics --debug --no-listing --max-age --help --version LATCH_DEBUG; do
  grep -q -- "$word" <<<"$page" || fail "latch.1 does not show '$word'"
done
[ "$("$prefix/bin/latch" --version)" = "latch $v" ] ||
  fail "the installed latch says $("$prefix/bin/latch" --version)"

# pkg-config, as the README says: no LD_LIBRARY_PATH needed to start it.
# shellcheck disable=SC2046,SC2086
cc -std=c11 -Wall -Werror $flags -o "$tmp/hello_pc" "$src/examples/hello.c" \
  $(pkg-config --cflags --libs latch)
run_hello "$tmp/hello_pc"

# latch.pc maps a project root given to it; by default it maps nothing.
mkdir -p "$tmp/pcproj/src"
cp "$src/examples/hello.c" "$tmp/pcproj/src/"
# shellcheck disable=SC2046,SC2086
cc -std=c11 $flags -o "$tmp/hello_root" "$tmp/pcproj/src/hello.c" $(pkg-config \
  --define-variable=project_root="$tmp/pcproj/" --cflags --libs latch)
strings "$tmp/hello_root" | grep -x "src/hello.c" >/dev/null ||
  fail "project_root did not map __FILE__"
# shellcheck disable=SC2046,SC2086
cc -std=c11 $flags -o "$tmp/hello_abs" "$tmp/pcproj/src/hello.c" \
  $(pkg-config --cflags --libs latch)
strings "$tmp/hello_abs" | grep -x "$tmp/pcproj/src/hello.c" >/dev/null ||
  fail "the default latch.pc changed __FILE__"

# CMake: find_package(latch), once against each library.
mkdir -p "$tmp/proj"
cp "$src/examples/hello.c" "$tmp/proj/"
cat >"$tmp/proj/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.18)
project(hello C)
find_package(latch 0.1 REQUIRED)
add_executable(hello hello.c)
target_link_libraries(hello PRIVATE latch::latch)
add_executable(hello_static hello.c)
target_link_libraries(hello_static PRIVATE latch::latch_static)
CMAKE
cmake -S "$tmp/proj" -B "$tmp/proj/build" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_C_FLAGS="$flags" >"$tmp/cmake.log" 2>&1 ||
  { cat "$tmp/cmake.log"; fail "find_package(latch) failed"; }
cmake --build "$tmp/proj/build" >"$tmp/build.log" 2>&1 ||
  { cat "$tmp/build.log"; fail "the CMake project did not build"; }
# The package maps the project's directory out of __FILE__ (item 4).
grep -rq -- "-fmacro-prefix-map=$tmp/proj/=" "$tmp/proj/build/CMakeFiles" ||
  fail "find_package(latch) did not set -fmacro-prefix-map"
# The mapped name is what the binary carries (latch_res_send's site;
# a sanitizer build keeps the absolute one too, for its own metadata).
strings "$tmp/proj/build/hello" | grep -x "hello.c" >/dev/null ||
  fail "hello's sites do not name hello.c"
run_hello "$tmp/proj/build/hello"
run_hello "$tmp/proj/build/hello_static"

# 2. DESTDIR: staged for a package, prefix as configured (/usr/local by
# default), nothing run on this system.
stage=$tmp/stage
DESTDIR=$stage cmake --install "$build" >"$tmp/stage.log"
grep -q "Ran ldconfig" "$tmp/stage.log" && fail "ldconfig ran under DESTDIR"
spc=$(find "$stage" -name latch.pc)
real_prefix=$(sed -n 's/^prefix=//p' "$spc")
[ -f "$stage$real_prefix/include/latch.h" ] || fail "latch.h not staged"
case "$real_prefix" in "$stage"*) fail "latch.pc names the stage" ;; esac
# shellcheck disable=SC2046,SC2086
PKG_CONFIG_PATH=$(dirname "$spc") PKG_CONFIG_SYSROOT_DIR=$stage \
  cc -std=c11 -Wall -Werror $flags -o "$tmp/hello_stage" \
  "$src/examples/hello.c" $(PKG_CONFIG_PATH=$(dirname "$spc") \
  PKG_CONFIG_SYSROOT_DIR=$stage pkg-config --cflags --libs latch)
run_hello "$tmp/hello_stage" "$(dirname "$(find "$stage" -name liblatch.so.0)")"
echo "test_install: all passed"
