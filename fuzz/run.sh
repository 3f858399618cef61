#!/bin/sh
# fuzz/run.sh SECONDS - builds the two libFuzzer targets with clang, ASan and
# UBSan into build-fuzz/ and runs each for SECONDS (default 60), or, given
# --seeds (`make test` does), runs each over its seeds once, mutating
# nothing: the targets still build and link, and the oracle still passes
# every seed (it broke silently once, when Redis and TLS landed):
#  - fuzz_parser (fuzz_parser.c): the request parser, its corpus seeded from
#    the llhttp fixtures;
#  - fuzz_lifecycle (fuzz_lifecycle.c + lifecycle.c): programs of API calls
#    and network events against a real server on 127.0.0.1, judged by the
#    lifecycle oracle; seeded from fuzz/lifecycle-corpus/.
# FUZZ_TARGETS="parser lifecycle" picks which (default both). LF_OPS,
# LF_ALLOW and LF_SKIP narrow the lifecycle programs (fuzz_lifecycle.c).
#
# The shared folder is $LATCH_SHARED_DIR, else ../shared next to the repo.
# Extra libFuzzer flags can be passed in FUZZ_FLAGS (e.g. "-jobs=4").
# A crash leaves its input in build-fuzz/crash-*; replay it with
#   build-fuzz/fuzz_parser build-fuzz/crash-<hash>
# or, for the lifecycle target (a readable trace of the program):
#   LF_VERBOSE=1 build-fuzz/fuzz_lifecycle build-fuzz/crash-<hash>
set -eu

secs=${1:-60}
# --seeds: the seeds once (-runs=0), no fuzzing.
limit="-max_total_time=$secs"
if [ "$secs" = --seeds ]; then
    limit=-runs=0
fi
root=$(cd "$(dirname "$0")/.." && pwd)
shared=${LATCH_SHARED_DIR:-$root/../shared}
out=$root/build-fuzz
cc=${CC_FUZZ:-clang}

targets=${FUZZ_TARGETS:-parser lifecycle}
flags="-std=c11 -D_GNU_SOURCE -g -O1 -Wall -Wextra -Wshadow
    -Wstrict-prototypes -Wno-unused-parameter -Werror
    -fsanitize=fuzzer,address,undefined
    -fno-sanitize-recover=undefined"

run_parser() {
    rm -rf "$out/seeds"
    mkdir -p "$out/corpus" "$out/seeds"
    # shellcheck disable=SC2086 # flags is a list of flags
    $cc $flags -I"$root/include" -I"$root/src" \
        "$root/fuzz/fuzz_parser.c" "$root/src/parser.c" -o "$out/fuzz_parser"

    # The first byte of an input is the fuzzer's control byte (limits, split
    # pattern), so every fixture is seeded three times: default, tiny and
    # unbounded-body limits.
    n=0
    for f in "$shared"/corpus/llhttp/raw/*.bin; do
        [ -e "$f" ] || continue
        b=$(basename "$f" .bin)
        printf '\000' | cat - "$f" >"$out/seeds/$b-0"
        printf '\001' | cat - "$f" >"$out/seeds/$b-1"
        printf '\002' | cat - "$f" >"$out/seeds/$b-2"
        n=$((n + 1))
    done
    if [ "$n" -eq 0 ]; then
        echo "run.sh: no seeds in $shared/corpus/llhttp/raw" >&2
        exit 1
    fi

    # shellcheck disable=SC2086 # FUZZ_FLAGS is a list of flags
    "$out/fuzz_parser" "$limit" -max_len=8192 \
        -timeout=10 -dict="$root/fuzz/dict" -artifact_prefix="$out/" \
        -print_final_stats=1 ${FUZZ_FLAGS:-} "$out/corpus" "$out/seeds"
}

run_lifecycle() {
    mkdir -p "$out/lifecycle-corpus"
    # The whole library, built with the fuzzer's instrumentation.
    # shellcheck disable=SC2086 # flags, pkg-config output are lists
    $cc $flags -DLATCH_BUILDING -I"$root/include" -I"$root/src" \
        -I"$root/fuzz" "$root"/src/*.c "$root/fuzz/lifecycle.c" \
        "$root/fuzz/fuzz_lifecycle.c" -o "$out/fuzz_lifecycle" \
        $(pkg-config --cflags --libs libuv jansson hiredis openssl) \
        -lpthread -lm

    # Each input runs a server and real connections: a few per second. A
    # program that hangs is reported by the oracle itself within ~15 s;
    # -timeout is the backstop. Inputs past 4 KiB decode to the same
    # program (fuzz_lifecycle.c).
    # shellcheck disable=SC2086 # FUZZ_FLAGS is a list of flags
    "$out/fuzz_lifecycle" "$limit" -max_len=4096 \
        -timeout=60 -artifact_prefix="$out/" -print_final_stats=1 \
        ${FUZZ_FLAGS:-} "$out/lifecycle-corpus" "$root/fuzz/lifecycle-corpus"
}

status=0
for t in $targets; do
    case $t in
    parser) run_parser || status=$? ;;
    lifecycle) run_lifecycle || status=$? ;;
    *)
        echo "run.sh: unknown target $t" >&2
        exit 2
        ;;
    esac
done
exit $status
