#!/bin/sh
# fuzz/run.sh SECONDS - builds the request-parser fuzzer (fuzz_parser.c)
# with clang's libFuzzer, ASan and UBSan into build-fuzz/, seeds its corpus
# from the llhttp fixtures and runs it for SECONDS (default 60).
#
# The shared folder is $LATCH_SHARED_DIR, else ../shared next to the repo.
# Extra libFuzzer flags can be passed in FUZZ_FLAGS (e.g. "-jobs=4").
# A crash leaves its input in build-fuzz/crash-*; replay it with
#   build-fuzz/fuzz_parser build-fuzz/crash-<hash>
set -eu

secs=${1:-60}
root=$(cd "$(dirname "$0")/.." && pwd)
shared=${LATCH_SHARED_DIR:-$root/../shared}
out=$root/build-fuzz
cc=${CC_FUZZ:-clang}

rm -rf "$out/seeds"
mkdir -p "$out/corpus" "$out/seeds"
$cc -std=c11 -D_GNU_SOURCE -g -O1 -Wall -Wextra -Wshadow \
    -Wstrict-prototypes -Werror \
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -I"$root/include" -I"$root/src" \
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
exec "$out/fuzz_parser" -max_total_time="$secs" -max_len=8192 \
    -timeout=10 -dict="$root/fuzz/dict" -artifact_prefix="$out/" \
    -print_final_stats=1 ${FUZZ_FLAGS:-} "$out/corpus" "$out/seeds"
