#!/usr/bin/env bash
# scripts/count_lines.sh: the README's table of Express's examples and
# their latch ports (examples/express_ports/), counted from the sources so
# that no number is written by hand.
#
# Each port holds its Express original in a comment between the lines
# "express: begin" and "express: end", and its latch code between
# "/* latch: begin */" and "/* latch: end */". Counted on both sides: code
# lines, that is lines that are not blank and not only a comment (a line
# of code with a trailing comment counts). Both sides are formatted at 80
# columns (clang-format for C, prettier's width for JS).
#
#   scripts/count_lines.sh              prints the table
#   scripts/count_lines.sh --update F   writes it into F between the lines
#                                       <!-- express-ports:begin --> and
#                                       <!-- express-ports:end -->
#   scripts/count_lines.sh --check F    fails when F's table is not what
#                                       the sources give, when a port is
#                                       longer than twice its original, or
#                                       when a port holds a mutex, a
#                                       condition variable or a reference
#                                       count (issue 16's bar)
set -euo pipefail
cd "$(dirname "$0")/.."

ports=(examples/express_ports/*.c)
[ -e "${ports[0]}" ] || { echo "count_lines: no ports found" >&2; exit 1; }

count() { # $1: file; prints "express latch"
    awk '
    /express: begin/ { ex = 1; next }
    /express: end/   { ex = 0; next }
    /\/\* latch: begin \*\// { la = 1; next }
    /\/\* latch: end \*\//   { la = 0; next }
    ex {
        line = $0
        sub(/^ \* ?/, "", line)
        if (line ~ /^[ \t]*$/ || line ~ /^[ \t]*\/\//)
            next
        e++
    }
    la {
        if ($0 ~ /^[ \t]*$/ || $0 ~ /^[ \t]*(\/\*|\*|\/\/)/)
            next
        l++
    }
    END { printf "%d %d\n", e, l }
    ' "$1"
}

table() {
    echo "| example | Express lines | latch lines | latch / Express |"
    echo "|---|---:|---:|---:|"
    for f in "${ports[@]}"; do
        read -r e l < <(count "$f")
        if [ "$e" -eq 0 ] || [ "$l" -eq 0 ]; then
            echo "count_lines: $f: no Express or latch region" >&2
            exit 1
        fi
        awk -v f="$f" -v e="$e" -v l="$l" 'BEGIN {
            n = f; sub(/.*\//, "", n)
            printf "| [%s](%s) | %d | %d | %.2f |\n", n, f, e, l, l / e
        }'
    done
}

# The README with its table replaced by $2 (a file).
splice() {
    awk -v tf="$2" '
    /<!-- express-ports:begin -->/ {
        print; while ((getline t < tf) > 0) print t; skip = 1; found = 1; next
    }
    /<!-- express-ports:end -->/ { skip = 0 }
    !skip { print }
    END { if (!found) exit 3 }
    ' "$1"
}

case "${1:-}" in
"")
    table
    ;;
--update | --check)
    readme=${2:?"usage: $0 --update|--check README.md"}
    tmp=$(mktemp)
    out=$(mktemp)
    trap 'rm -f "$tmp" "$out"' EXIT
    table >"$tmp"
    if ! splice "$readme" "$tmp" >"$out"; then
        echo "count_lines: $readme has no express-ports markers" >&2
        exit 1
    fi
    if [ "$1" = --update ]; then
        cat "$out" >"$readme"
        exit 0
    fi
    bad=0
    if ! cmp -s "$readme" "$out"; then
        echo "count_lines: the table in $readme is stale" \
            "(scripts/count_lines.sh --update $readme):" >&2
        diff "$readme" "$out" >&2 || true
        bad=1
    fi
    for f in "${ports[@]}"; do
        read -r e l < <(count "$f")
        if [ "$l" -gt $((2 * e)) ]; then
            echo "count_lines: $f: $l latch lines for $e of Express's," \
                "more than twice" >&2
            bad=1
        fi
        if grep -nE 'pthread_mutex|pthread_cond|latch_res_retain|refcount|\brefs?\b' \
            "$f" >&2; then
            echo "count_lines: $f: a mutex, condition variable or" \
                "reference count in a port" >&2
            bad=1
        fi
    done
    exit $bad
    ;;
*)
    echo "usage: $0 [--update|--check README.md]" >&2
    exit 2
    ;;
esac
