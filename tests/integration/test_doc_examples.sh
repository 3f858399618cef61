#!/usr/bin/env bash
# test_doc_examples.sh - every code example in include/latch.h's comments
# compiles, so none can rot while the API moves under it.
#
# An example is a run of comment lines indented by five spaces after the
# " *" (" *     code"). Each one becomes a translation unit of its own:
# tests/integration/doc_examples.h first (the headers and the user's own
# functions the examples call, declared), then the example under a #line
# directive, so a failure names latch.h's line. An example that starts
# with a declaration (static, struct, ...) is compiled at file scope;
# one made of statements is compiled as the body of a handler (req, res
# and data in scope). Compiled with the project's warnings as errors,
# except unused functions and parameters (an example shows one piece).
#
# Usage (ctest passes these): test_doc_examples.sh CC SOURCE_DIR WORK_DIR
# LATCH_DOC_MIN: the fewest examples expected (a broken extraction that
# finds none must not pass).
set -euo pipefail

cc=$1
src=$2
work=$3
min=${LATCH_DOC_MIN:-11}

rm -rf "$work"
mkdir -p "$work"
awk -v dir="$work" '
function flush() {
    if (n == 0)
        return
    file = sprintf("%s/example_%03d.c", dir, ++count)
    print "#include \"doc_examples.h\"" > file
    scope = lines[1] ~ /^(static|struct|typedef|enum|union|extern|#)/
    if (!scope)
        print "int latch_doc_fragment(latch_req *req, latch_res *res, void *data);\nint latch_doc_fragment(latch_req *req, latch_res *res, void *data)\n{" > file
    printf("#line %d \"include/latch.h\"\n", first) > file
    for (i = 1; i <= n; i++)
        print lines[i] > file
    if (!scope)
        print "return LATCH_DONE;\n}" > file
    close(file)
    n = 0
}
/^ \*     / {
    if (n == 0)
        first = FNR
    lines[++n] = substr($0, 8)
    next
}
{ flush() }
END { flush() }
' "$src/include/latch.h"

found=0
failed=0
for f in "$work"/example_*.c; do
    [ -e "$f" ] || continue
    found=$((found + 1))
    if ! "$cc" -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wshadow \
        -Wstrict-prototypes -Werror -Wno-unused-function \
        -Wno-unused-parameter -I"$src/include" \
        -I"$src/tests/integration" -c "$f" -o "${f%.c}.o"; then
        echo "test_doc_examples: $(basename "$f") does not compile" \
            "(the example at $(sed -n 's/^#line \([0-9]*\).*/latch.h:\1/p' "$f"))" >&2
        failed=$((failed + 1))
    fi
done
echo "test_doc_examples: $found examples, $failed failed"
if [ "$found" -lt "$min" ]; then
    echo "test_doc_examples: expected at least $min examples in latch.h" >&2
    exit 1
fi
[ "$failed" -eq 0 ]
